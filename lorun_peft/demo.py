"""``lorun demo``: first the pretrained zoo (one live network swaps the five CS bundles and restores
a photograph at each ratio, no training), then the paper's two-phase training (Block-1, then LoRun)
on built-in images, with the PSNR / SSIM table, the parameter report, figures and a saved model,
in minutes on a CPU."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from . import zoo
from .models import run_model_folder
from .data import (
    IMAGE_SUFFIXES,
    ImageFolder,
    center_crop,
    list_files,
    load_image,
    photographs,
    synthetic_images,
)
from .denoisers import build_denoiser
from .errors import InvalidArgumentError
from .metrics import MetricTable, psnr, ssim
from .operators import BlockCS
from .plots import image_grid, line_chart, lora_update_figure
from .recipe import PAPER, train_two_phase
from .train import fit_operator
from .unfold import unfold

__all__ = ["demo", "zoo_tour"]


def demo_photograph(image: Path | None) -> tuple[torch.Tensor, str]:
    """The demo's gray photograph: ``image``, else scikit-image's "camera" when installed, else a
    built-in synthetic 256 x 256 test image (said so)."""
    if image is not None:
        return load_image(image, 1), str(image)
    try:
        return photographs(["camera"], size=256)[0], "scikit-image's camera (centre 256 x 256)"
    except ImportError:
        return synthetic_images(1, size=256, seed=7)[0], "a synthetic 256 x 256 image (pip install scikit-image for a photograph)"


@torch.no_grad()
def zoo_tour(x: torch.Tensor, out: Path | None = None) -> dict[str, dict[str, float]]:
    """Swap every CS bundle of the zoo into ONE live network and restore ``x`` (1 x H x W) at each
    ratio: prints PSNR of A^T y, the linear estimate and LoRun, and the swap time; with ``out``
    writes ``out/zoo.png`` (rows: ratios; truth | linear estimate | LoRun).

    >>> scores = zoo_tour(torch.rand(1, 64, 64))  # doctest: +ELLIPSIS
    one live LoRun-9 network...
    >>> sorted(scores)[0]
    'cs-0.01'
    """
    names = [n for n in zoo.list() if n.startswith("cs-")]
    start = time.perf_counter()
    net = zoo.load(names[-1])
    print(f"one live LoRun-{net.K} network from the pretrained zoo ({time.perf_counter() - start:.1f} s to load, "
          f"no training); each CS bundle swapped in, then a {x.shape[-2]} x {x.shape[-1]} image restored:")
    print(f"  {'bundle':<8} {'A^T y dB':>9} {'linear dB':>10} {'LoRun dB':>9} {'swap ms':>8} {'restore s':>10}")
    scores: dict[str, dict[str, float]] = {}
    columns: list[list[torch.Tensor]] = [[], [], []]
    for name in names:
        tick = time.perf_counter()
        net.load_adapters(zoo.bundle_path(name))
        swap = time.perf_counter() - tick
        tick = time.perf_counter()
        with fit_operator(net.operator, x.shape[-2:]):
            y = net.operator.A(x[None])
            outputs = [net.operator.A_adjoint(y), net.operator.initial_estimate(y), net(y)]
        outputs = [o.clamp(0, 1)[0] for o in outputs]
        scores[name] = dict(zip(("adjoint", "linear", "lorun"), (float(psnr(o[None], x[None])) for o in outputs)))
        print(f"  {name:<8} {scores[name]['adjoint']:9.2f} {scores[name]['linear']:10.2f} {scores[name]['lorun']:9.2f} "
              f"{swap * 1e3:8.1f} {time.perf_counter() - tick:10.2f}")
        for column, o in zip(columns, (x, *outputs[1:])):
            column.append(o)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        image_grid(out / "zoo.png", columns, ["truth (rows: " + ", ".join(names) + ")", "linear estimate", "LoRun-9 (zoo)"])
        print(f"figure: {out / 'zoo.png'}")
    return scores


def demo(
    out: Path,
    ratio: float = 0.25,
    K: int = 9,  # noqa: N803
    gamma: float = 10.0,
    steps: int = 200,
    seed: int = 0,
    data: Path | None = None,
    progress: bool = True,
    image: Path | None = None,
) -> dict[str, dict[str, float]]:
    """The zoo's five CS bundles on one photograph (``image``; see :func:`zoo_tour`), then train
    Block-1 then LoRun on CS, report PSNR / SSIM and parameters, save figures and the model.

    Returns ``{method: {"psnr": dB, "ssim": value}}`` for "A^T y", "Block-1" and "LoRun-K".
    """
    photo, where = demo_photograph(image)
    print(f"Part 1: the pretrained zoo on {where}")
    zoo_tour(photo, out)
    print(f"\nPart 2: training from scratch, as the paper's Algorithm 1 (the zoo's recipe is in benchmarks/zoo.py)")
    torch.manual_seed(seed)
    if data is not None:
        files = list_files(data, IMAGE_SUFFIXES)
        held_out = max(1, len(files) // 5) if len(files) > 1 else 0
        train_images: Any = ImageFolder(files[: len(files) - held_out] if held_out else files)
        test = [load_image(f, 1) for f in (files[-held_out:] if held_out else files)]
        smallest = min(min(x.shape[-2:]) for x in [*train_images.items, *test])
        if smallest < 16:
            raise InvalidArgumentError(f"the images in {data} are too small for the demo (need at least 16 x 16)")
        train_images.patch_size = min(32, smallest // 16 * 16)  # random patches, a multiple of the block
        test_set = [center_crop(x, min(64, smallest) // 16 * 16) for x in test]
        source = f"{len(files) - held_out} images of {data} ({held_out} held out)"
    else:
        train_images = synthetic_images(96, size=32, seed=seed)
        test_set = list(synthetic_images(4, size=64, seed=seed + 1))
        source = "built-in images"
    operator = BlockCS(ratio, block=16, seed=seed)
    net = unfold(build_denoiser("unet", in_channels=1, width=8), operator, K, gamma=gamma, share="base", noise_level=True)
    with torch.no_grad():  # A^T y of the initial (untrained) sampling matrix, the usual baseline
        initial = [operator.initial_estimate(operator.A(x[None]))[0].clamp(0, 1) for x in test_set]

    print(f"Phase 1: Block-1 (one shared trainable denoiser), then phase 2: LoRun-{K} (frozen base + {K} LoRA "
          f"adapters, gamma {gamma}%); CS ratio {ratio}, {steps} steps each on {source}")
    start = time.perf_counter()
    result = train_two_phase(net, train_images, steps=steps, lr=2e-3, batch_size=8, phases=PAPER, seed=seed, test_data=test_set,
                             keep_outputs=True, progress=progress)
    seconds = time.perf_counter() - start
    block_1, lorun = result.backbone_evaluation, result.evaluation
    assert block_1 is not None and lorun is not None
    baseline = MetricTable(["psnr", "ssim"])
    for i, (x0, x) in enumerate(zip(initial, test_set)):
        baseline.add(str(i), psnr=float(psnr(x0[None], x[None])), ssim=float(ssim(x0[None], x[None])))
    results = {"A^T y": baseline.mean()}
    results["Block-1"] = {k: block_1.mean()[k] for k in ("psnr", "ssim")}
    results[f"LoRun-{K}"] = {k: lorun.mean()[k] for k in ("psnr", "ssim")}

    report = net.parameter_report()
    print(f"\nOn {len(test_set)} held-out {test_set[0].shape[-1]}x{test_set[0].shape[-2]} test images, "
          f"after {seconds:.0f} s of training:")
    print(f"  {'method':<10} {'PSNR (dB)':>9} {'SSIM':>7} {'parameters':>11}")
    params = {"A^T y": "", "Block-1": f"{report.base + report.step + report.operator:,}", f"LoRun-{K}": f"{report.total:,}"}
    for name, values in results.items():
        print(f"  {name:<10} {values['psnr']:9.2f} {values['ssim']:7.4f} {params[name]:>11}")
    print(f"  (Block-{K}, K independent denoisers, would have {report.block_k:,} parameters: "
          f"LoRun-{K} has {report.fraction_of_block_k:.0%} of them)")
    print("\n" + str(report))

    out.mkdir(parents=True, exist_ok=True)
    figure, stages, updates = out / "demo.png", out / "stages.png", out / "lora_updates.png"
    image_grid(figure, [test_set, initial, block_1.restored, lorun.restored], ["truth", "A^T y", "Block-1", f"LoRun-{K}"], scale=3)
    line_chart(stages, {"Block-1": block_1.stage_psnr, f"LoRun-{K}": lorun.stage_psnr},
               title="PSNR after each stage (test images)", xlabel="stage", ylabel="PSNR (dB)")
    lora_update_figure(updates, net)
    model = net.save_pretrained(run_model_folder(out))
    print(f"\nfigures: {figure} (truth | A^T y | Block-1 | LoRun-{K}), {stages}, {updates}")
    print(f"model: {model}  (try: lorun eval --model {out})")
    return results


