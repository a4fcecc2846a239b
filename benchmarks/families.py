"""The zoo's two new families (issue #32 item 3), first step: which base serves each, and what the
simple alternatives score, before any training.

Tasks: deblurring with a known kernel (KAIR's ``kernels_12.mat``: #3, an isotropic Gaussian of
sigma 2.0 px, and #8, a motion blur; noise 2.55/255) and inpainting (50 % and 80 % of the pixels
missing at random). For each:

- plug-and-play HQS, K = 9, over the zoo's base (phase 1 made it a CS specialist) and over the
  Gaussian-denoiser base it started from (``--gaussian-base``: a folder written by ``save_base``;
  the zoo held it at commit fa9421a, ``lorun_peft/pretrained/base/``, made by
  ``python -m benchmarks.zoo train base``), its noise schedule chosen on Train400's 10 held-out
  validation images (0 training steps);
- Wiener deconvolution with the true kernel and noise level (its noise-to-signal ratio chosen on
  the same validation images), or scikit-image's biharmonic inpainting;

scored on Set12 (gray, whole images) and, with ``--bsd68``, BSD68. Writes
``benchmarks/results/families_bases.json``. Then each bundle is trained over the base chosen for
its family (adapters and steps only, resumable) and exported into the zoo with its test figures:

    python -m benchmarks.families bases --data ../shared/data --gaussian-base DIR [--bsd68]
    python -m benchmarks.families train inpaint-80 --data ../shared/data --base DIR [--minutes 30]
    python -m benchmarks.families export inpaint-80 --data ../shared/data --base DIR

Variants that are measured but not shipped (``--work`` elsewhere, ``export --score-only`` writes
``test_figures.json`` there and leaves the zoo alone): a longer schedule (``train --steps 1200``),
the higher noise (``train deblur-motion --noise 7.65``, in grey levels of 255), and Block-1 or
Block-9 over the same base (``train --share base|none --lr 1e-4``: every weight trained, the
ceiling of what adapters over this base could reach).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import lorun_peft
from lorun_peft import UnfoldedNetwork
from lorun_peft.data.images import ImageFolder
from lorun_peft.metrics import psnr
from lorun_peft.operators import Blur, Inpainting
from lorun_peft.operators.kernels import load_kernels
from lorun_peft.persistence.bundle import load_base
from lorun_peft.training.evaluation import evaluate
from lorun_peft.training.pretrain import choose_noise_schedule

from lorun_peft.steps import geometric

from . import zoo
from .zoo import train400

K = 9
NOISE = 2.55 / 255
FIRSTS = (0.15, 0.08, 0.04, 0.02, 0.01)
LASTS = (0.005, 0.0025)
# Phase 2 for every bundle of the two families: adapters and steps over the family's base, HQS;
# plug-and-play searches the same initial HQS weights mu
RECIPE = {"steps": 300, "batch_size": 4, "patch_size": 96, "lr": 1e-3, "gamma": 10.0, "mu": (0.01, 0.05, 0.2, 1.0)}
NSR = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)  # Wiener's noise-to-signal grid
KERNELS = {"deblur-gauss": 3, "deblur-motion": 8}  # indices into KAIR's kernels_12.mat
MISSING = {"inpaint-50": 0.5, "inpaint-80": 0.8}


def operator(task: str, data: Path) -> tuple[torch.nn.Module, float]:
    """The task's operator and its measurement noise."""
    if task in KERNELS:
        return Blur(load_kernels(data / "kernels" / "kernels_12.mat")[KERNELS[task]]), NOISE
    return Inpainting(missing=MISSING[task]), 0.0


def measure(op: torch.nn.Module, x: torch.Tensor, noise: float, seed: int) -> torch.Tensor:
    """y = A x + noise (its own draws: the same distribution as the networks', not the same numbers)."""
    y = op.A(x[None])
    generator = torch.Generator().manual_seed(seed)
    return y + noise * torch.randn(y.shape, generator=generator) if noise else y


def wiener(op: Blur, y: torch.Tensor, nsr: float) -> torch.Tensor:
    """Wiener deconvolution with the operator's own transfer function (A of a unit impulse)."""
    impulse = torch.zeros_like(y)
    impulse[..., 0, 0] = 1
    otf = torch.fft.fft2(op.A(impulse))
    return torch.fft.ifft2(otf.conj() * torch.fft.fft2(y) / (otf.abs().square() + nsr)).real


def biharmonic(op: Inpainting, y: torch.Tensor) -> torch.Tensor:
    """scikit-image's biharmonic inpainting of the missing pixels."""
    from skimage.restoration import inpaint_biharmonic

    missing = (op.mask == 0).cpu().numpy()
    return torch.from_numpy(inpaint_biharmonic(y[0, 0].numpy().astype(np.float64), missing)).float()[None, None]


def classical(task: str, op: torch.nn.Module, images: list[torch.Tensor], noise: float, nsr: float | None = None) -> float:
    """Mean PSNR of Wiener (deblurring, at ``nsr``) or biharmonic inpainting (seeds as ``evaluate``'s)."""
    scores = []
    for i, x in enumerate(images):
        with lorun_peft.operators.fit_operator(op, x.shape[-2:]):
            y = measure(op, x, noise, i)
            x_hat = wiener(op, y, nsr) if task in KERNELS else biharmonic(op, y)
        scores.append(float(psnr(x_hat.clamp(0, 1), x[None])))
    return float(np.mean(scores))


def test_images(data: Path, name: str) -> list[torch.Tensor]:
    folder = ImageFolder(data / name, channels=1, augment=False)
    return [folder.full(i) for i in range(len(folder))]


def bases(args: argparse.Namespace) -> None:
    """Plug-and-play over both bases, and the classical methods, for each task (see the module docstring)."""
    _, validation = train400(args.data)
    val = [ImageFolder(validation).full(i) for i in range(len(validation))]
    sets = {"set12": test_images(args.data, "set12"), **({"bsd68": test_images(args.data, "bsd68")} if args.bsd68 else {})}
    bases = {"phase-1 base (zoo)": lorun_peft.zoo.load_base("cs"), "Gaussian base": load_base(args.gaussian_base)}
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    for task in args.tasks:
        start = time.perf_counter()
        op, noise = operator(task, args.data)
        row: dict = {"noise_sigma": noise}
        if task in KERNELS:
            row["nsr"] = max(NSR, key=lambda nsr: classical(task, op, val, noise, nsr))
        row["classical"] = {name: classical(task, op, images, noise, row.get("nsr")) for name, images in sets.items()}
        for label, base in bases.items():
            net = lorun_peft.unfold(base, op, K, algorithm="hqs", share="base", noise_level=True).eval()
            choice = max((choose_noise_schedule(net, val, step=mu, firsts=FIRSTS, lasts=LASTS, noise_sigma=noise)
                          for mu in RECIPE["mu"]), key=lambda c: c["psnr"])
            net.steps.initialise(step=choice["step"], sigma=geometric(choice["sigma_first"], choice["sigma_last"], K))
            scores = {name: evaluate(net, images, noise_sigma=noise).mean() for name, images in sets.items()}
            row[label] = {"validation": round(choice["psnr"], 3), "mu": choice["step"],
                          "sigma": [choice["sigma_first"], choice["sigma_last"]],
                          **{name: round(s["psnr"], 3) for name, s in scores.items()},
                          **{f"{name}_x0": round(s["x0_psnr"], 3) for name, s in scores.items()}}
        row["seconds"] = round(time.perf_counter() - start)
        results[task] = row
        print(task, json.dumps(row), flush=True)
        args.out.write_text(json.dumps(results, indent=1))


def train(args: argparse.Namespace) -> dict:
    """Train ``args.task``'s bundle over the base in ``args.base`` (resumable: run again to go on)."""
    op, noise = operator(args.task, args.data)
    noise = args.noise / 255 if args.noise is not None else noise
    variant = {"share": args.share} if args.share != "lora" else {}  # the zoo's recipes stay as they were
    recipe = zoo.overridden({**RECIPE, "noise_sigma": noise, **variant}, steps=args.steps, lr=args.lr)
    net = lorun_peft.unfold(load_base(args.base), op, K, algorithm="hqs", gamma=recipe["gamma"], noise_level=True,
                            share=args.share)
    return zoo.train_task(args.task, net, recipe, args.data, args.work, steps_grid=recipe["mu"], firsts=FIRSTS,
                          lasts=LASTS, time_limit=args.minutes * 60 if args.minutes else None)


@torch.no_grad()
def export(args: argparse.Namespace) -> dict:
    """Score the trained bundle on Set12 and BSD68 beside plug-and-play (the same base, the schedule
    chosen untrained on validation) and the classical method, then write it (float16) and, where its
    base is not the zoo's, the family base ``base-<family>/`` into the zoo (``--score-only``: the
    figures only, into the work folder's ``test_figures.json``)."""
    folder = args.work / args.task
    base = load_base(args.base)
    if (folder / "network").is_dir():  # a Block-1 or Block-9 variant
        if not args.score_only:
            raise SystemExit(f"{folder} holds a Block-1 or Block-K network, not a LoRun bundle: only --score-only scores it")
        net = UnfoldedNetwork.from_pretrained(folder / "network")
    else:
        net = lorun_peft.load(base, folder / "bundle")
    op, noise = net.operator, json.loads((folder / "recipe.json").read_text())["noise_sigma"]
    init = json.loads((folder / "step_init.json").read_text())
    pnp = lorun_peft.unfold(base, operator(args.task, args.data)[0], K, algorithm="hqs", share="base", noise_level=True).eval()
    pnp.steps.initialise(step=init["step"], sigma=geometric(init["sigma_first"], init["sigma_last"], K))
    _, validation = train400(args.data)
    nsr = None
    if args.task in KERNELS:
        val = [ImageFolder(validation).full(i) for i in range(len(validation))]
        nsr = max(NSR, key=lambda v: classical(args.task, op, val, noise, v))
    classical_name = "wiener" if args.task in KERNELS else "biharmonic"
    metrics: dict = {"dataset": "Set12 / BSD68 (gray, whole images)", "noise_sigma": round(noise, 5)}
    for name in ("set12", "bsd68"):
        images = test_images(args.data, name)
        ours, plain = evaluate(net, images, noise_sigma=noise).mean(), evaluate(pnp, images, noise_sigma=noise).mean()
        metrics.update({f"{name}_psnr": round(ours["psnr"], 2), f"{name}_ssim": round(ours["ssim"], 4),
                        f"{name}_plug_and_play_psnr": round(plain["psnr"], 2), f"{name}_x0_psnr": round(ours["x0_psnr"], 2),
                        f"{name}_{classical_name}_psnr": round(classical(args.task, op, images, noise, nsr), 2)})
        print(name, {k: v for k, v in metrics.items() if k.startswith(name)}, flush=True)
    summary = json.loads((folder / "summary.json").read_text())
    metrics["train_steps"], metrics["train_cpu_minutes"] = summary["steps"], round(summary["cpu_seconds"] / 60, 1)
    (folder / "test_figures.json").write_text(json.dumps(metrics, indent=1))
    if args.score_only:
        return metrics
    family = f"base-{args.task.split('-')[0]}"
    shared = json.loads((zoo.ZOO / "base" / "base_config.json").read_text())["fingerprint"]
    if net.base_fingerprint() != shared and not (zoo.ZOO / family / "base_config.json").is_file():
        net.save_base(zoo.ZOO / family, storage_dtype="float16")
    net.save_adapters(zoo.ZOO / args.task, metrics=metrics, storage_dtype="float16")
    zoo.write_zoo_card(zoo.ZOO)
    lorun_peft.zoo.write_checksums(zoo.ZOO)
    return metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bases", help="plug-and-play over both bases and the classical methods")
    b.add_argument("--gaussian-base", type=Path, required=True)
    b.add_argument("--bsd68", action="store_true", help="also score BSD68 (minutes more)")
    b.add_argument("--tasks", nargs="+", default=[*KERNELS, *MISSING])
    b.add_argument("--out", type=Path, default=Path("benchmarks/results/families_bases.json"))
    for name in ("train", "export"):
        p = sub.add_parser(name)
        p.add_argument("task", choices=[*KERNELS, *MISSING])
        p.add_argument("--base", type=Path, required=True, help="the family's base (a save_base folder)")
        p.add_argument("--work", type=Path, default=Path("zoo_work"))
        if name == "train":
            p.add_argument("--steps", type=int)
            p.add_argument("--minutes", type=float, help="stop (checkpointed) after this long; run again to go on")
            p.add_argument("--noise", type=float, help="measurement noise sigma in grey levels of 255 "
                           "(default: 2.55 for deblurring, 0 for inpainting)")
            p.add_argument("--share", choices=("lora", "base", "none"), default="lora",
                           help="base: Block-1, none: Block-9 (every weight trained; measured, not shipped)")
            p.add_argument("--lr", type=float, help=f"learning rate (default {RECIPE['lr']:g}; Block-1/9: try 1e-4)")
        else:
            p.add_argument("--score-only", action="store_true", help="the test figures only: the zoo is left alone")
    for p in sub.choices.values():
        p.add_argument("--data", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    {"bases": bases, "train": train, "export": export}[args.command](args)


if __name__ == "__main__":
    main()
