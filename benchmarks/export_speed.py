"""Deployment speed side by side (issue #25): per task at 256 x 256, onnxruntime (float and int8),
eager PyTorch on the merged network (the fastest eager path) and ``torch.compile`` of it, on one
thread and on every core, in one run; int8's PSNR cost on test images; GFLOP/s per restore next
to a plain 3 x 3 convolution on onnxruntime at the same thread count.

    python -m benchmarks.export_speed --data ../shared/data            # benchmarks/results/export_speed.json
    python -m benchmarks.export_speed --data ../shared/data --quick    # a smoke run: 2 repeats, no compile

Tasks: the zoo's cs-0.25 and sr-x4-k0, and a CASSI network of the paper's size (28 bands, mask
256 x 256, the zoo's U-Net width, untrained: it is timed, not scored). int8 files are calibrated on
16 Train400 training images (SR: reflect-padded to the file's 256 x 256); the PSNR cost is measured
on Set11 (CS, full size) and on Set5's images that hold a 256 x 256 centre crop (SR, luma).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import lorun_peft
import lorun_peft.zoo
from lorun_peft.data import IMAGE_SUFFIXES, list_files, load_image, modcrop
from lorun_peft.data.images import center_crop
from lorun_peft.denoisers import UNet
from lorun_peft.export import OnnxNetwork, to_int8, to_onnx
from lorun_peft.export.writer import plain_network, session
from lorun_peft.metrics import rgb_to_y
from lorun_peft.operators import CASSI
from lorun_peft.training.evaluation import evaluate

from .common import interleaved_times, save

SIZE = (256, 256)
CALIBRATION = 16


def cassi_network() -> lorun_peft.UnfoldedNetwork:
    g = torch.Generator().manual_seed(0)
    operator = CASSI((torch.rand(*SIZE, generator=g) > 0.5).float(), step=2, bands=28)
    net = lorun_peft.unfold(UNet(in_channels=28, width=16, depth=3), operator, 9, algorithm="hqs", noise_level=True)
    with torch.no_grad():  # adapters off their zero start, so the merged weights are not the base's
        for name, p in net.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01, generator=g)
    return net.eval()


def networks() -> dict[str, lorun_peft.UnfoldedNetwork]:
    return {"cs-0.25": lorun_peft.zoo.load("cs-0.25").eval(), "sr-x4-k0": lorun_peft.zoo.load("sr-x4-k0").eval(),
            "cassi (untrained)": cassi_network()}


def calibration_images(data: Path, task: str) -> list[torch.Tensor]:
    """Training images only (Train400's first files): CS whole blocks, SR the file's fixed size."""
    images = [load_image(f, 1) for f in list_files(data / "train400", IMAGE_SUFFIXES)[:CALIBRATION]]
    if task.startswith("cs"):
        return [modcrop(x, 32) for x in images]
    padded = []
    for x in images:
        pad = [max(0, (SIZE[1] - x.shape[-1] + 1) // 2)] * 2 + [max(0, (SIZE[0] - x.shape[-2] + 1) // 2)] * 2
        padded.append(center_crop(F.pad(x[None], pad, mode="reflect")[0], *SIZE))
    return padded


def test_images(data: Path, task: str) -> list[torch.Tensor]:
    if task.startswith("cs"):
        return [modcrop(load_image(f, 1), 32) for f in list_files(data / "set11", IMAGE_SUFFIXES)]
    luma = [rgb_to_y(load_image(f, 3)[None])[0] for f in list_files(data / "set5", IMAGE_SUFFIXES)]
    return [center_crop(x, *SIZE) for x in luma if min(x.shape[-2:]) >= SIZE[0]]


def mean_psnr(net: Any, images: list[torch.Tensor], border: int) -> float:
    return evaluate(net, images, border=border).mean()["psnr"]


def conv_reference(threads: int, repeats: int) -> float:
    """GFLOP/s of one 16 -> 16 channel 3 x 3 convolution at 256 x 256 on onnxruntime."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).normal(size=(16, 16, 3, 3)).astype(np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, *SIZE])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, *SIZE])], [weight])
    runner = session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(), threads)
    x = np.random.default_rng(1).random((1, 16, *SIZE), dtype=np.float32)
    ms = statistics.median(interleaved_times({"conv": lambda: runner.run(None, {"x": x})}, repeats * 4, warmup=3)["conv"])
    return 2 * 16 * 16 * 9 * SIZE[0] * SIZE[1] / (ms * 1e-3) / 1e9


def run(data: Path, work: Path, repeats: int, quick: bool) -> dict[str, Any]:
    torch.manual_seed(0)
    out: dict[str, Any] = {"size": list(SIZE), "repeats": repeats, "threads": {}, "tasks": {}}
    cores = os.cpu_count() or 1
    thread_counts = sorted({1, cores})
    for task, net in networks().items():
        entry: dict[str, Any] = {}
        plain = plain_network(net)
        channels = 28 if task.startswith("cassi") else 1
        x = torch.rand(1, channels, *SIZE, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            y = plain.operator.A(x)
            with FlopCounterMode(display=False) as counter:
                plain(y)
        entry["gflop"] = counter.get_total_flops() / 1e9
        start = time.perf_counter()
        report = to_onnx(net, work / f"{task.split()[0]}.onnx", image_size=SIZE, source=task)
        entry["export_seconds"], entry["max_abs_diff"] = time.perf_counter() - start, report.max_abs_diff
        entry["onnx_mib"] = report.size_bytes / 2**20
        files = {"onnxruntime float": report.path}
        if not task.startswith("cassi"):
            start = time.perf_counter()
            files["onnxruntime int8"] = to_int8(report.path, work / f"{task}-int8.onnx", calibration_images(data, task))
            entry["int8_seconds"] = time.perf_counter() - start
            images, border = test_images(data, task), (plain.operator.scale if task.startswith("sr") else 0)
            torch.set_num_threads(cores)
            entry["psnr"] = {"eager": mean_psnr(net, images, border),
                             **{name: mean_psnr(OnnxNetwork(path, cores), images, border) for name, path in files.items()}}
            entry["psnr_images"] = len(images)
        compiled = None
        if not quick:
            start = time.perf_counter()
            try:
                compiled = torch.compile(plain)
                with torch.no_grad():
                    compiled(y)
                entry["compile_seconds"] = time.perf_counter() - start
            except Exception as err:  # noqa: BLE001 - recorded: a task torch.compile cannot take is a result too
                compiled, entry["compile_error"] = None, f"{type(err).__name__}: {err}"[:500]
        entry["ms"] = {}
        for threads in thread_counts:
            torch.set_num_threads(threads)
            runners = {name: OnnxNetwork(path, threads) for name, path in files.items()}
            calls: dict[str, Callable[[], Any]] = {"eager (merged)": lambda: plain(y)}
            if compiled is not None:
                calls["torch.compile"] = lambda: compiled(y)
            calls.update({name: (lambda r=r: r(y)) for name, r in runners.items()})
            with torch.no_grad():
                times = interleaved_times(calls, repeats, warmup=2)
            entry["ms"][threads] = {name: statistics.median(t) for name, t in times.items()}
            out["threads"][threads] = {"conv3x3_gflops": conv_reference(threads, repeats)}
            print(task, threads, {k: round(v, 1) for k, v in entry["ms"][threads].items()}, flush=True)
        out["tasks"][task] = entry
    torch.set_num_threads(1)
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = ["| task | threads | eager (merged) ms | torch.compile | ORT float | ORT int8 | GFLOP/s (ORT float) | 3x3 conv GFLOP/s (ORT) |",
             "|---|---|---|---|---|---|---|---|"]
    for task, entry in result["tasks"].items():
        for threads, ms in entry["ms"].items():
            eager = ms["eager (merged)"]
            ratio = lambda name: f"{ms[name]:.0f} ({ms[name] / eager:.2f}x)" if name in ms else "-"  # noqa: E731
            lines.append(f"| {task} | {threads} | {eager:.0f} | {ratio('torch.compile')} | {ratio('onnxruntime float')} | "
                         f"{ratio('onnxruntime int8')} | {entry['gflop'] / (ms['onnxruntime float'] * 1e-3):.1f} | "
                         f"{result['threads'][threads]['conv3x3_gflops']:.1f} |")
    lines += ["", "| task | PSNR eager | ORT float | ORT int8 | int8 cost (dB) | images |", "|---|---|---|---|---|---|"]
    for task, entry in result["tasks"].items():
        if "psnr" in entry:
            p = entry["psnr"]
            lines.append(f"| {task} | {p['eager']:.3f} | {p['onnxruntime float']:.3f} | {p['onnxruntime int8']:.3f} | "
                         f"{p['onnxruntime float'] - p['onnxruntime int8']:.3f} | {entry['psnr_images']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the shared data folder (train400/, set11/, set5/)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="2 repeats, no torch.compile (a smoke run)")
    parser.add_argument("--out", default="export_speed", help="results/NAME.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        result = run(args.data, Path(work), 2 if args.quick else args.repeats, args.quick)
    result["table"] = markdown(result)
    print(result["table"])
    print(save(args.out, result))


if __name__ == "__main__":
    main()
