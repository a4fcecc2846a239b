"""``lorun demo``: first the pretrained zoo (one live network swaps the five CS bundles and restores
a photograph at each ratio, no training), then the paper's two-phase training (Block-1, then LoRun)
on built-in images, with the PSNR / SSIM table, the parameter report, figures and a saved model,
in minutes on a CPU."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import torch

from .. import zoo
from ..data.images import (
    IMAGE_SUFFIXES,
    ImageFolder,
    center_crop,
    list_files,
    load_image,
    photographs,
    synthetic_images,
)
from ..denoisers import build_denoiser
from ..errors import InvalidArgumentError
from ..training.evaluation import evaluate
from ..metrics import psnr
from ..resolve import run_model_folder
from ..operators import BlockCS, fit_operator
from ..plots import image_grid, lora_update_figure, stage_chart
from ..training.recipe import train_two_phase
from ..training.loop import train
from ..unfold import measure_and_restore, unfold

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
        y, x0, x_hat, _ = measure_and_restore(net, x[None])
        with fit_operator(net.operator, x.shape[-2:]):
            outputs = [net.operator.A_adjoint(y), x0, x_hat]
        outputs = [o.clamp(0, 1)[0] for o in outputs]
        scores[name] = dict(zip(("adjoint", "linear", "lorun"), (float(psnr(o[None], x[None])) for o in outputs)))
        print(f"  {name:<8} {scores[name]['adjoint']:9.2f} {scores[name]['linear']:10.2f} {scores[name]['lorun']:9.2f} "
              f"{swap * 1e3:8.1f} {time.perf_counter() - tick:10.2f}")
        for column, o in zip(columns, (x, *outputs[1:])):
            column.append(o)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        h, w = x.shape[-2:]
        image_grid(out / "zoo.png", columns, ["truth", "$x_0$: linear estimate Q y per block", f"LoRun-{net.K} (zoo)"],
                   reference=0, row_labels=[f"bundle {n} (ratio {n[3:]})" for n in names], inset=(0.12, 0.4, 0.25),
                   title=f"One live LoRun-{net.K} network from the pretrained zoo, a CS bundle swapped in per row, on a "
                         f"{w}x{h} image\n$x_0$: the bundle's learned linear estimate (stage_0's input); PSNR / SSIM "
                         f"against the truth under each panel; inset: zoom of the gold box")
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
    """The zoo's five CS bundles on one photograph (``image``; see :func:`zoo_tour`), then train on
    CS as the paper's Algorithm 1 at equal steps: Block-1 for ``steps`` steps (phase 1), then from
    that network ``steps`` more each for Block-1 and for LoRun (phase 2); report PSNR / SSIM and
    parameters, save figures (demo.png, stages.png, lora_updates.png) and the LoRun model.

    Returns ``{method: {"psnr": dB, "ssim": value}}`` for "A^T y" (x0, through LoRun's sampling
    matrix), "Block-1 (phase 1)", "Block-1" (2 x ``steps`` steps) and "LoRun-K" (``steps`` + ``steps``).
    """
    photo, where = demo_photograph(image)
    print(f"Part 1: the pretrained zoo on {where}")
    zoo_tour(photo, out)
    print("\nPart 2: training from scratch, as the paper's Algorithm 1 (the zoo's recipe is in benchmarks/zoo.py)")
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
    lorun_name, total = f"LoRun-{K}", 2 * steps
    print(f"Phase 1: Block-1 (one shared trainable denoiser) for {steps} steps; then from there {steps} more steps "
          f"each for Block-1 (trained on) and {lorun_name} (frozen base + {K} LoRA adapters, gamma {gamma}%), so both "
          f"get {total} steps in all; CS ratio {ratio}, on {source}")
    options: dict[str, Any] = {"lr": 2e-3, "batch_size": 8, "seed": seed, "test_data": test_set, "keep_outputs": True,
                               "progress": progress}
    start = time.perf_counter()
    phase_1 = train_two_phase(net, train_images, steps=steps, phases=("backbone",), **options).backbone_evaluation
    block_net = copy.deepcopy(net)  # Block-1 goes on training from the very network LoRun starts from
    train(block_net, train_images, steps=steps, lr=2e-3, batch_size=8, seed=seed + 1, desc="Block-1, phase 2",
          progress=progress)
    block_1 = evaluate(block_net, test_set, seed=seed, keep_outputs=True)
    lorun = train_two_phase(net, train_images, steps=steps, phases=("adapters",), **options).evaluation
    seconds = time.perf_counter() - start
    assert phase_1 is not None and lorun is not None
    x0 = lorun.mean()  # x0 = A^T y through LoRun's sampling matrix (trained with it), what its stage_0 starts from
    results = {"A^T y": {"psnr": x0["x0_psnr"], "ssim": x0["x0_ssim"]}}
    rows = {"A^T y": ("x0 = A^T y (LoRun's A)", "0"), "Block-1 (phase 1)": ("Block-1, phase 1 only", str(steps)),
            "Block-1": ("Block-1", str(total)), lorun_name: (lorun_name, f"{steps} + {steps}")}
    for name, evaluation in (("Block-1 (phase 1)", phase_1), ("Block-1", block_1), (lorun_name, lorun)):
        results[name] = {k: evaluation.mean()[k] for k in ("psnr", "ssim")}

    report = net.parameter_report()
    print(f"\nOn {len(test_set)} held-out {test_set[0].shape[-1]}x{test_set[0].shape[-2]} test images, "
          f"after {seconds:.0f} s of training (Block-1 and {lorun_name} at equal steps: {total} each):")
    print(f"  {'method':<24} {'steps':>9} {'PSNR (dB)':>9} {'SSIM':>7} {'parameters':>11}")
    block_params = f"{report.base + report.step + report.operator:,}"
    params = {"A^T y": "", "Block-1 (phase 1)": block_params, "Block-1": block_params, lorun_name: f"{report.total:,}"}
    for name, values in results.items():
        label, used = rows[name]
        print(f"  {label:<24} {used:>9} {values['psnr']:9.2f} {values['ssim']:7.4f} {params[name]:>11}")
    print(f"  (Block-1 phase 1 is where {lorun_name} starts; Block-{K}, K independent denoisers, would have "
          f"{report.block_k:,} parameters: {lorun_name} has {report.fraction_of_block_k:.0%} of them)")
    print("\n" + str(report))

    out.mkdir(parents=True, exist_ok=True)
    figure, stages, updates = out / "demo.png", out / "stages.png", out / "lora_updates.png"
    h, w = test_set[0].shape[-2:]
    with torch.no_grad():  # LoRun's x0 unclamped (evaluate keeps it clamped to [0, 1]), to show its own range
        x0s = [net.operator.initial_estimate(net.operator.A(x[None]))[0] for x in test_set]
    image_grid(figure, [test_set, x0s, block_1.restored, lorun.restored],
               ["truth", r"$x_0 = A^\top y$ (stage_0's input)", f"Block-1, {total} steps", f"{lorun_name}, {steps} + {steps} steps"],
               scale=3, reference=0, row_labels=[f"test image {i + 1}" for i in range(len(test_set))], inset=(0.15, 0.15, 0.22),
               stretch=[1],
               title=f"Block CS at ratio {ratio}, {len(test_set)} held-out {w}x{h} test images (rows). Under each panel: "
                     f"PSNR / SSIM against the truth; inset: zoom of the gold box.\n$x_0 = A^\\top y$: the "
                     f"measurements mapped back through the sampling matrix, before any network (off in scale, with a pattern "
                     f"repeating every 16 px block: shown stretched to its range). Block-1 and {lorun_name} each trained {total} steps "
                     f"({steps} shared, then {steps} each).")
    stage_chart(stages, {f"Block-1 after phase 1 ({steps} steps; {lorun_name}'s start)": phase_1.stage_psnr,
                         f"Block-1 ({total} steps)": block_1.stage_psnr,
                         f"{lorun_name} ({steps} + {steps} steps)": lorun.stage_psnr},
                title=f"Mean PSNR on the test images after each stage (block CS, ratio {ratio})")
    lora_update_figure(updates, net)
    model = net.save_pretrained(run_model_folder(out))
    print(f"\nfigures: {figure} (truth | x0 = A^T y | Block-1 | {lorun_name}), {stages}, {updates}")
    print(f"model: {model}  (try: lorun eval --model {out})")
    return results


