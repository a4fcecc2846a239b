"""``lorun demo``: the paper's two-phase training (Block-1, then LoRun) on built-in images, with
the PSNR / SSIM table, the parameter report, figures and a saved model, in minutes on a CPU."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from .commands import network_config, save_model
from .data import (
    IMAGE_SUFFIXES,
    ImageFolder,
    center_crop,
    list_files,
    load_image,
    synthetic_images,
)
from .denoisers import build_denoiser
from .errors import InvalidArgumentError
from .metrics import MetricTable, psnr, ssim
from .operators import BlockCS
from .plots import image_grid, line_chart, lora_update_figure
from .train import train_two_phase
from .unfold import unfold

__all__ = ["demo"]


def demo(
    out: Path,
    ratio: float = 0.25,
    K: int = 9,  # noqa: N803
    gamma: float = 10.0,
    steps: int = 200,
    seed: int = 0,
    data: Path | None = None,
    progress: bool = True,
) -> dict[str, dict[str, float]]:
    """Train Block-1 then LoRun on CS, report PSNR / SSIM and parameters, save figures and the model.

    Returns ``{method: {"psnr": dB, "ssim": value}}`` for "A^T y", "Block-1" and "LoRun-K".
    """
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
    result = train_two_phase(net, train_images, steps=steps, lr=2e-3, batch_size=8, seed=seed, test_data=test_set,
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
    args = argparse.Namespace(task="cs", ratio=ratio, block=16, channels=1, denoiser="unet", width=8, depth=2, K=K,
                              gamma=gamma, algorithm="pgd", adapter="lora", bands=28, seed=seed)
    model = save_model(out, net, network_config(args, operator, "lora"))
    print(f"\nfigures: {figure} (truth | A^T y | Block-1 | LoRun-{K}), {stages}, {updates}")
    print(f"model: {model}  (try: lorun eval --model {out})")
    return results


