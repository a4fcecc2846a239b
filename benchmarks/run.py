"""The paper's claims measured side by side in one process: LoRun-9 vs Block-9 (and Block-1).

    python -m benchmarks.run --quick            # minutes on a 2-core CPU
    python -m benchmarks.run --full             # about 10 minutes on a 2-core CPU

(a) parameters for the reference U-Net and Transformer at gamma 5/10/20; (b) bytes on disk for one
extra task; (c) peak memory of one phase-2 training step (parameters, gradients, Adam state,
activations) for LoRun-9 and Block-9, each with and without checkpointing, at the headline size,
over a sweep of image sides (plot run_<mode>_memory.png) and at the quality run's batch; (d)
inference latency on 1 x 1 x 256 x 256 for Block-9, LoRun-9 (PEFT path) and LoRun-9 (merged
path); (f) phase-2 training step time; and the stage-switch cost. Quality (g) is
benchmarks/quality.py. Every figure is a ratio to Block-9 measured in the same run; times are
interleaved repeats, summarised as medians and as quartiles of each repeat's ratio to the Block-9
call beside it (robust to load that drifts on a shared machine). Writes
benchmarks/results/run_<mode>.json and a PNG plot.
On CPU, activation memory is the bytes autograd saves for backward (counted with saved-tensor
hooks, each storage once); on CUDA it is torch.cuda.max_memory_allocated.
"""

from __future__ import annotations

import argparse
import copy
import statistics
from typing import Any

import torch

import lorun_peft
from lorun_peft.denoisers import Transformer, UNet
from lorun_peft.operators import BlockCS

from .common import RESULTS, interleaved_times, machine, median_ms, save

K = 9
DEVICE = torch.device("cpu")  # main() sets it from --device (CUDA when there is one)


def build(denoiser: torch.nn.Module, share: str, gamma: float = 10.0, device: torch.device | str | None = None,
          **kwargs: Any) -> lorun_peft.UnfoldedNetwork:
    net = lorun_peft.unfold(denoiser, BlockCS(0.25, block=32), K, share=share, gamma=gamma, noise_level=True, **kwargs)
    return net.to(device or DEVICE)


def parameters() -> dict[str, Any]:
    rows = {}
    for name, make in (("unet", lambda: UNet.preset("paper-cs")), ("transformer", lambda: Transformer.preset("paper-cs"))):
        block_1 = build(make(), "base", device="cpu").parameter_report()
        block_9 = build(make(), "none", device="cpu").parameter_report()
        row = {"block_1": block_1.total, "block_9": block_9.total, "operator": block_9.operator}
        for gamma in (5.0, 10.0, 20.0):
            report = build(make(), "lora", gamma, device="cpu").parameter_report()
            row[f"lorun_gamma{gamma:g}"] = report.total
            # denoisers only (the paper's tables leave out the sampling matrix): base + K adapters vs K bases
            row[f"denoiser_ratio_gamma{gamma:g}"] = (report.base + sum(report.adapters.values())) / (K * report.base)
        rows[name] = row
    return rows


def step_memory(net: lorun_peft.UnfoldedNetwork, x: torch.Tensor) -> int:
    """Bytes of one training step: parameters + gradients + Adam state + saved activations."""
    net.train()
    net.operator.image_size = tuple(x.shape[-2:])  # sides that are not multiples of the CS block
    y = net.operator.A(x).detach()
    trainable = [p for p in net.parameters() if p.requires_grad]
    if x.is_cuda:
        torch.cuda.reset_peak_memory_stats()
        optimizer = torch.optim.Adam(trainable)
        torch.nn.functional.mse_loss(net(y), x).backward()
        optimizer.step()
        return torch.cuda.max_memory_allocated()
    seen: dict[Any, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = torch.nn.functional.mse_loss(net(y), x)
    loss.backward()
    param_ids = {p.untyped_storage().data_ptr() for p in net.parameters()}
    activations = sum(n for ptr, n in seen.items() if ptr not in param_ids)
    params = sum(p.numel() * p.element_size() for p in net.parameters())
    grads_and_adam = 3 * sum(p.numel() * p.element_size() for p in trainable)
    return params + grads_and_adam + activations


def memory(size: int, batch: int = 1) -> dict[str, int]:
    """(c) one phase-2 step's bytes for Block-9 and LoRun-9, each with and without checkpointing."""
    torch.manual_seed(0)
    x = torch.rand(batch, 1, size, size, device=DEVICE)
    unet = UNet.preset("paper-cs")
    return {
        "block_9": step_memory(build(unet, "none"), x),
        "lorun_9": step_memory(build(unet, "lora"), x),
        "lorun_9_checkpoint": step_memory(build(unet, "lora", checkpoint=True), x),
        "block_9_checkpoint": step_memory(build(unet, "none", checkpoint=True), x),
    }


def memory_sweep(sides: list[int]) -> dict[str, dict[str, int]]:
    """(c) the same at batch 1 over image sides: where the weights' share (LoRun's saving) gives way to activations."""
    return {str(side): memory(side) for side in sides}


def plot_memory_sweep(sweep: dict[str, dict[str, int]], path) -> None:
    """Memory ratio to Block-9 against the image side, with the issue's goals as flat lines."""
    from lorun_peft.plots import line_chart

    sides = [int(side) for side in sweep]
    rows = list(sweep.values())
    line_chart(path, {
        "LoRun-9": [r["lorun_9"] / r["block_9"] for r in rows],
        "LoRun-9 + ckpt": [r["lorun_9_checkpoint"] / r["block_9"] for r in rows],
        "LoRun-9 + ckpt / Block-9 + ckpt": [r["lorun_9_checkpoint"] / r["block_9_checkpoint"] for r in rows],
        "goal 0.5": [0.5] * len(rows),
        "goal 0.2 (ckpt)": [0.2] * len(rows),
    }, x=sides, title="phase-2 step memory / Block-9 (U-Net paper-cs, batch 1)", xlabel="image side (pixels)",
        ylabel="step memory / Block-9's (ratio)")


def latency(size: int, repeats: int) -> dict[str, list[float]]:
    """(d) milliseconds of one inference call per repeat, for Block-9 and LoRun-9's two paths."""
    torch.manual_seed(0)
    unet = UNet.preset("paper-cs")
    x = torch.rand(1, 1, size, size, device=DEVICE)
    block_9 = build(unet, "none").eval()
    lorun = build(unet, "lora", adapter_options={"init_lora_weights": False}).eval()
    peft_path = copy.deepcopy(lorun)
    peft_path.inference = "peft"
    y = block_9.operator.A(x)
    nets = {"block_9": block_9, "lorun_9_peft": peft_path, "lorun_9_merged": lorun}
    with torch.inference_mode():
        return interleaved_times({name: lambda net=net: net(y) for name, net in nets.items()}, repeats)


def summarise(times: dict[str, list[float]], reference: str = "block_9") -> dict[str, dict[str, Any]]:
    """Median milliseconds, and quartiles of each repeat's ratio to the reference call beside it."""
    ratios = {}
    for name, t in times.items():
        paired = sorted(a / b for a, b in zip(t, times[reference]))
        ratios[name] = {q: paired[round(f * (len(paired) - 1))] for q, f in (("p25", 0.25), ("median", 0.5), ("p75", 0.75))}
    return {"median_ms": {name: statistics.median(t) for name, t in times.items()}, f"ratio_to_{reference}": ratios}


def disk_bytes() -> dict[str, int]:
    """(b) bytes on disk for one extra task: a LoRun-9 bundle vs a Block-9 checkpoint (safetensors)."""
    import tempfile
    from pathlib import Path

    from safetensors.torch import save_file

    unet = UNet.preset("paper-cs")
    lorun, block_9 = build(unet, "lora", device="cpu"), build(unet, "none", device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        bundle = lorun.save_adapters(Path(tmp) / "bundle")
        lorun_bytes = sum(f.stat().st_size for f in Path(bundle).rglob("*") if f.is_file())
        checkpoint = Path(tmp) / "block9.safetensors"
        save_file({k: v.contiguous() for k, v in block_9.state_dict().items()}, checkpoint)
        return {"lorun_9_bundle": lorun_bytes, "block_9_checkpoint": checkpoint.stat().st_size}


def train_step_time(size: int, repeats: int) -> dict[str, list[float]]:
    """(f) milliseconds of one training step (forward, backward, Adam), interleaved repeats."""
    torch.manual_seed(0)
    unet = UNet.preset("paper-cs")
    x = torch.rand(1, 1, size, size, device=DEVICE)
    nets = {"block_9": build(unet, "none"), "lorun_9": build(unet, "lora"),
            "lorun_9_checkpoint": build(unet, "lora", checkpoint=True)}
    steps = {}
    for name, net in nets.items():
        optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad])

        def step(net=net, optimizer=optimizer) -> None:
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.mse_loss(net(net.operator.A(x)), x).backward()
            optimizer.step()

        steps[name] = step
    return interleaved_times(steps, repeats)


def switch_cost() -> dict[str, float]:
    """Milliseconds to switch the active stage on a denoiser with about 50 adapted layers."""
    denoiser = Transformer(1, depth=12)  # 12 blocks x (qkv, proj, fc1, fc2) + conv_in + conv_out = 50
    net = build(denoiser, "lora")
    layers = len(net.rank_table().layers)
    ours = median_ms(lambda: net.denoisers.activate(3), 200)
    peft = median_ms(lambda: net.denoisers.peft_model.set_adapter("stage_3"), 50)
    net.denoisers.peft_model.set_requires_grad(net.adapter_names, True)
    return {"layers": layers, "lorun_activate_ms": ours, "peft_set_adapter_ms": peft}


def plot(result: dict[str, Any], path) -> None:
    """Bars of every ratio to Block-9 (1.0 = Block-9)."""
    bars = []
    p = result["parameters"]["unet"]
    bars += [(f"params LoRun g{g}", p[f"lorun_gamma{g}"] / p["block_9"]) for g in ("5", "10", "20")]
    m = result["memory_bytes"]
    bars += [("train mem LoRun", m["lorun_9"] / m["block_9"]), ("train mem LoRun+ckpt", m["lorun_9_checkpoint"] / m["block_9"])]
    t = result["latency"]["ratio_to_block_9"]
    bars += [("latency PEFT path", t["lorun_9_peft"]["median"]), ("latency merged", t["lorun_9_merged"]["median"])]
    from lorun_peft.plots import draw_bars, save_figure

    save_figure(path, draw_bars(dict(bars), title="LoRun-9 against Block-9 (U-Net, CS 0.25): parameters, training "
                                "memory and latency", xlabel="LoRun-9 / Block-9 (ratio; 1.0 = Block-9)", reference=1.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small sizes, few repeats (default)")
    mode.add_argument("--full", action="store_true", help="paper sizes, more repeats")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where memory, latency and step time are measured (default: cuda if available)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    global DEVICE
    DEVICE = torch.device(args.device)
    full = args.full
    print(f"machine: {machine()}")
    result: dict[str, Any] = {"mode": "full" if full else "quick", "K": K, "device": str(DEVICE)}
    result["parameters"] = parameters()
    result["disk_bytes"] = disk_bytes()
    result["memory_sweep"] = memory_sweep([32, 48, 64, 96, 128, 192, 256] if full else [32, 64, 128])
    result["memory_bytes"] = result["memory_sweep"]["256" if full else "128"]  # the headline size, measured once
    result["memory_training_batch"] = memory(48, batch=8)  # benchmarks/quality.py's --full training batch
    result["latency"] = summarise(latency(256, 25 if full else 5))
    result["train_step"] = summarise(train_step_time(256 if full else 128, 9 if full else 3))
    result["switch"] = switch_cost()
    name = f"run_{result['mode']}" + ("_gpu" if DEVICE.type == "cuda" else "")
    print(f"saved {save(name, result)}")
    plot(result, RESULTS / f"{name}.png")
    plot_memory_sweep(result["memory_sweep"], RESULTS / f"{name}_memory.png")
    p, m, s = result["parameters"], result["memory_bytes"], result["switch"]
    for model, row in p.items():
        print(f"(a) {model}: " + ", ".join(
            f"{k} {v:.3f}" if "ratio" in k else f"{k} {v:,} ({v / row['block_9']:.3f})" for k, v in row.items()))
    b = result["disk_bytes"]
    print(f"(b) one extra task on disk: LoRun-9 bundle {b['lorun_9_bundle']:,} B, Block-9 checkpoint "
          f"{b['block_9_checkpoint']:,} B ({b['lorun_9_bundle'] / b['block_9_checkpoint']:.3f})")
    print("(c) phase-2 step memory / Block-9: " + ", ".join(f"{k} {v / m['block_9']:.3f}" for k, v in m.items()))
    for label, row in [*((f"side {side}", r) for side, r in result["memory_sweep"].items()),
                       ("batch 8 x 48 x 48", result["memory_training_batch"])]:
        print(f"    {label:<18} Block-9 {row['block_9'] / 2**20:8.1f} MiB; / Block-9: "
              + ", ".join(f"{k} {v / row['block_9']:.3f}" for k, v in row.items() if k != "block_9"))
    for label, key in (("(d) latency", "latency"), ("(f) phase-2 train step", "train_step")):
        ms, ratio = result[key]["median_ms"], result[key]["ratio_to_block_9"]
        print(f"{label}, median ms (paired ratio to Block-9: median [p25, p75]): " + ", ".join(
            f"{k} {v:.1f} ({ratio[k]['median']:.3f} [{ratio[k]['p25']:.3f}, {ratio[k]['p75']:.3f}])" for k, v in ms.items()))
    print(f"stage switch on {s['layers']} layers: ours {s['lorun_activate_ms']:.4f} ms, PEFT set_adapter {s['peft_set_adapter_ms']:.3f} ms")


if __name__ == "__main__":
    main()
