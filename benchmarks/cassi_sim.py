"""CASSI on generated cubes: LoRun-9 vs Block-9 vs Block-1 at equal steps, next to the closed-form start.

Training data: spectral cubes generated from Train400's first 380 gray images
(:mod:`lorun_peft.data.spectral`), a new cube for every 48 x 48 patch; the coded aperture is a new random
48 x 48 window of the TSA-Net mask for every batch (``--mask simu``: the simulation mask, or
``real``: the real system's 660 x 660 mask, for the real scenes). Held out: the cubes generated from
the last 20 Train400 images, whole (180 x 180), measured through the centre 180 x 180 of the
simulation mask, so the test also restores at a size other than the training crop.

    python -m benchmarks.cassi_sim train --variant block1 --mask simu   # resumable; one run per call
    python -m benchmarks.cassi_sim eval                                 # the table, JSON and figures
    python -m benchmarks.cassi_sim cubes                                # a figure of generated cubes

Equal steps: Block-1 and Block-9 train ``--steps`` steps end to end; LoRun-9 trains the shared
Block-1 backbone for half of them, then its adapters (and step parameters) for the other half.
Nothing here touches Set11, BSD68, Set5 or Set14.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from lorun_peft import unfold
from lorun_peft.data import IMAGE_SUFFIXES, list_files
from lorun_peft.denoisers import build_denoiser
from lorun_peft.metrics import band_psnr
from lorun_peft.operators import CASSI
from lorun_peft.operators.cassi import load_mask
from lorun_peft.training.recipe import train_two_phase
from lorun_peft.data.spectral import BAND_CENTRES, GeneratedCubes, render_rgb, sam
from lorun_peft.training.loop import train
from lorun_peft.unfold import UnfoldedNetwork

from .cassi_real import save_small
from .common import RESULTS

RUNS = Path("runs/cassi")
VARIANTS = {"block1": "Block-1", "block9": "Block-9", "lorun9": "LoRun-9"}
MASKS = {"simu": "cassi_tsa/simu/mask.mat", "real": "cassi_tsa/real/mask.mat"}
HELD_OUT = 20


def split(data: Path) -> tuple[list[Path], list[Path]]:
    """Train400's files: (training, held out = the last 20)."""
    files = list_files(data / "train400", IMAGE_SUFFIXES)
    return files[:-HELD_OUT], files[-HELD_OUT:]


def build(variant: str, mask: torch.Tensor, mask_file: str, patch: int, width: int, K: int = 9) -> UnfoldedNetwork:
    """A K-stage HQS network over the repo's U-Net (28 bands in and out, noise-level input), whose
    output convolution starts at zero: every stage's denoiser starts as the identity (the U-Net
    is residual), so the untrained network returns the closed-form x0 instead of noise."""
    operator = CASSI(mask, step=2, bands=28, crop=patch, mask_file=mask_file)
    denoiser = build_denoiser("unet", in_channels=28, width=width, depth=2)
    with torch.no_grad():  # each denoiser starts as the identity, so the untrained network returns x0
        denoiser.conv_out.weight.zero_()
        denoiser.conv_out.bias.zero_()
    share = "none" if variant == "block9" else "base"
    return unfold(denoiser, operator, K=K, algorithm="hqs", share=share, noise_level=True)


def run_folder(mask: str, variant: str, tag: str = "") -> Path:
    """Where a run lives: runs/cassi/MASK-VARIANT[-TAG] (a tag keeps runs of other lengths apart)."""
    return RUNS / f"{mask}-{variant}{'-' + tag if tag else ''}"


def cmd_train(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    training, _ = split(args.data)
    mask = load_mask(args.data / MASKS[args.mask])
    net = build(args.variant, mask, MASKS[args.mask], args.patch, args.width)
    data = GeneratedCubes(training, patch_size=args.patch, seed=args.seed)
    folder = run_folder(args.mask, args.variant, args.tag)
    options = {"batch_size": args.batch, "checkpoint_every": 100, "progress": False, "seed": args.seed,
               "noise_sigma": args.noise}
    start = time.perf_counter()
    if args.variant == "block9":
        result = train(net, data, steps=args.steps, lr=args.lr, checkpoint_dir=folder / "checkpoints", **options)
        losses = result.losses
    else:
        phases = ("backbone",) if args.variant == "block1" else ("backbone", "adapters")
        steps = args.steps if args.variant == "block1" else args.steps // 2
        result = train_two_phase(net, data, steps=steps, lr=args.lr, phases=phases, checkpoint_dir=folder / "checkpoints", **options)
        losses = result.backbone.losses + (result.adapters.losses if result.adapters else [])
    net.save_pretrained(folder / "model")
    log = {"variant": args.variant, "mask": args.mask, "steps": args.steps, "patch": args.patch, "width": args.width,
           "batch": args.batch, "lr": args.lr, "noise": args.noise, "seconds_this_call": time.perf_counter() - start, "losses": losses}
    (folder / "train_log.json").write_text(json.dumps(log))
    print(f"{folder}: final loss {losses[-1]:.4g}, {log['seconds_this_call']:.0f} s this call")


def held_out_cubes(data: Path) -> tuple[list[torch.Tensor], list[str]]:
    """The held-out generated cubes (seed 10000 + i), whole 180 x 180."""
    cubes = GeneratedCubes(split(data)[1], augment=False, seed=10_000)
    return [cubes.full(i) for i in range(len(cubes))], cubes.names


@torch.no_grad()
def cmd_eval(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    cubes, names = held_out_cubes(args.data)
    side = cubes[0].shape[-1]
    full = load_mask(args.data / MASKS["simu"])
    top = (full.shape[0] - side) // 2
    mask = full[top : top + side, top : top + side]
    rows: dict[str, dict[str, float]] = {}
    per_band: dict[str, list[float]] = {}
    outputs: dict[str, torch.Tensor] = {}
    x = torch.stack(cubes)
    operator = CASSI(mask, step=2, bands=28)
    y = operator.A(x)
    x0 = operator.initial_estimate(y).clamp(0, 1)
    candidates = {"x0 (closed form)": x0}
    for variant, label in VARIANTS.items():
        folder = run_folder("simu", variant, args.tag) / "model"
        if not folder.is_dir():
            print(f"skipping {label}: {folder} not trained")
            continue
        net = UnfoldedNetwork.from_pretrained(folder).eval()
        net.operator.use_mask(mask)
        start = time.perf_counter()
        candidates[label] = torch.cat([net(y[i : i + 1]) for i in range(len(x))]).clamp(0, 1)
        rows[label] = {"seconds_per_cube": (time.perf_counter() - start) / len(x),
                       "parameters": net.parameter_report().total}
    for label, estimate in candidates.items():
        band_mse = ((estimate - x) ** 2).mean(dim=(-2, -1))  # N x B
        per_band[label] = (10 * torch.log10(1 / band_mse.clamp_min(1e-20))).mean(0).tolist()
        rows.setdefault(label, {}).update({"psnr": float(band_psnr(estimate, x).mean()), "sam_degrees": float(sam(estimate, x).mean())})
        outputs[label] = estimate[0]
    table = ["| method | PSNR (dB, band mean) | SAM (degrees) | parameters | s / cube |", "|---|---|---|---|---|"]
    for label, row in rows.items():
        table.append(f"| {label} | {row['psnr']:.2f} | {row['sam_degrees']:.2f} | {row.get('parameters', '-')} | "
                     f"{row.get('seconds_per_cube', float('nan')):.2f} |")
    print("\n".join(table))
    payload = {"held_out": names, "rows": rows, "per_band_psnr": per_band, "band_centres_nm": list(BAND_CENTRES),
               "mask": "centre 180 x 180 of the TSA-Net simulation mask"}
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"cassi_sim{'_' + args.tag if args.tag else ''}"
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2))
    steps = json.loads((run_folder("simu", "block1", args.tag) / "train_log.json").read_text()).get("steps") \
        if (run_folder("simu", "block1", args.tag) / "train_log.json").is_file() else None
    title = (f"CASSI on generated cubes (held-out Train400 381-400, centre 180 x 180 of the simulation mask)"
             f"{f', {steps} training steps each' if steps else ''}")
    figure(RESULTS / f"{name}.png", x[0], outputs, per_band, title)
    print(f"wrote {RESULTS / name}.json and {name}.png")


def figure(path: Path, truth: torch.Tensor, outputs: dict[str, torch.Tensor], per_band: dict[str, list[float]],
           title: str) -> None:
    """Left: PSNR per band of each method; right: colour renderings of one held-out cube (the truth
    and each estimate at the truth's exposure, with its PSNR / SAM)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    linear = render_rgb(truth, exposure=1.0) ** 2.2  # undo the sRGB curve (approximately) to find the exposure
    exposure = 1 / max(float(torch.quantile(linear.flatten(), 0.99)), 1e-6)
    tiles = {"truth": truth, **outputs}
    fig = plt.figure(figsize=(3.2 * (len(tiles) + 2), 3.4), dpi=100)
    grid = fig.add_gridspec(1, len(tiles) + 2)
    ax = fig.add_subplot(grid[0, :2])
    for label, values in per_band.items():
        ax.plot(BAND_CENTRES, values, marker=".", label=label.split(" ")[0])
    ax.set_xlabel("band centre (nm)")
    ax.set_ylabel("PSNR (dB), mean of held-out cubes")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    for i, (label, cube) in enumerate(tiles.items()):
        ax = fig.add_subplot(grid[0, i + 2])
        ax.imshow(render_rgb(cube, exposure=exposure).permute(1, 2, 0).numpy())
        score = "" if label == "truth" else (f"\n{float(band_psnr(cube[None], truth[None])):.2f} dB, "
                                             f"SAM {float(sam(cube[None], truth[None])):.1f} deg")
        ax.set_title(label.split(" ")[0] + score, fontsize=9)
        ax.axis("off")
    fig.suptitle(title + "; right: the first cube in colour (CIE 1931 rendering)", fontsize=10)
    fig.tight_layout()
    fig.subplots_adjust(top=0.76)  # room for the title above the tiles' two-line titles
    save_small(fig, path)


def cmd_cubes(args: argparse.Namespace) -> None:
    """What the generator makes: four held-out cubes (colour rendering, four bands) and the
    spectra of a few of their pixels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cubes, names = held_out_cubes(args.data)
    shown, bands = (0, 5, 10, 15), (4, 12, 20, 26)
    fig, axes = plt.subplots(len(shown), len(bands) + 2, figsize=(2.2 * (len(bands) + 2), 2.3 * len(shown)), dpi=80)
    for row, i in zip(axes, shown):
        cube = cubes[i]
        row[0].imshow(render_rgb(cube).permute(1, 2, 0).numpy())
        row[0].set_title(f"{names[i]} (colour)", fontsize=8)
        for ax, b in zip(row[1:], bands):
            ax.imshow(cube[b].numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{BAND_CENTRES[b]:g} nm", fontsize=8)
        for r, c in ((40, 40), (90, 90), (140, 60), (60, 140)):
            row[-1].plot(BAND_CENTRES, cube[:, r, c].numpy())
        row[-1].set_ylim(0, 1)
        row[-1].set_title("spectra of 4 pixels", fontsize=8)
        for ax in row[:-1]:
            ax.axis("off")
    fig.suptitle("Spectral cubes generated from held-out Train400 photographs (lorun_peft.data.spectral): colour, "
                 "four bands, the spectra of four pixels (reflectance 0-1 against band centre in nm)", fontsize=9)
    fig.tight_layout()
    save_small(fig, RESULTS / "cassi_generated.png")
    print(f"wrote {RESULTS / 'cassi_generated.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--variant", choices=sorted(VARIANTS), required=True)
    t.add_argument("--mask", choices=sorted(MASKS), default="simu")
    t.add_argument("--steps", type=int, default=1500)
    t.add_argument("--patch", type=int, default=48)
    t.add_argument("--width", type=int, default=16)
    t.add_argument("--batch", type=int, default=4)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--noise", type=float, default=0.0, help="Gaussian measurement noise (std, in y's units) while training")
    e = sub.add_parser("eval")
    e.add_argument("--threads", type=int, default=1)
    c = sub.add_parser("cubes")
    for p in (t, e):
        p.add_argument("--tag", default="", help="a name for runs of another length (runs/cassi/MASK-VARIANT-TAG)")
    for p in (t, e, c):
        p.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    {"train": cmd_train, "eval": cmd_eval, "cubes": cmd_cubes}[args.command](args)


if __name__ == "__main__":
    main()
