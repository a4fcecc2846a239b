"""The paper's tables at the zoo's scale (issue #24): Table II (LoRun-9 against Block-1 and Block-9,
side by side) and Table V (the SR bundles on BSD68).

    python -m benchmarks.paper_tables train block-9 --ratio 0.25 --work runs/zoo-task --data ../shared/data  # resumable
    python -m benchmarks.paper_tables train block-1 --ratio 0.25 --work runs/zoo-task --data ../shared/data
    python -m benchmarks.paper_tables table2 --ratios 0.10 0.25 --work runs/zoo-task --before ZOO --data ../shared/data
    python -m benchmarks.paper_tables table5 --data ../shared/data

``--work`` is the phase-2 folder of ``python -m benchmarks.zoo train cs-R`` over the task-trained base
(``WORK/base/denoiser.safetensors``, written by ``python -m benchmarks.phase1 save``). Every arm at a
ratio starts from that base, with the zoo's PCA rows fixed and the step values LoRun-9's phase 2
chose untrained (``WORK/cs-R/step_init.json``), and trains the same number of steps on the same
patches (batch 4, 96 x 96, cosine):

- LoRun-9: the K adapters and the steps over the frozen base (``benchmarks.zoo``, lr 1e-3);
- Block-1: the one base and the steps, shared by every stage (lr ``BLOCK_LR``);
- Block-9: nine copies of the base, one per stage, and the steps (lr ``BLOCK_LR``).

``table`` scores each on Set11 at full size (never used to train or choose anything), beside
LoRun-9 over the Gaussian base (the zoo folder ``--before``, e.g. an older checkout's
``lorun_peft/pretrained``) and the task-trained base as plug-and-play, with every network's
parameter count; it writes ``benchmarks/results/table2.json`` and prints a markdown table.

``table5`` scores the zoo's SR bundles on BSD68 as the paper's Table V does, on gray images (BSD68
is gray; no luma conversion), noiseless, with ``scale`` border pixels shaved, beside cubic
interpolation computed in the same run and the paper's U-Net LoRun-9 figures for its kernels K1
and K5. ``kernel_bank()`` 0 is K1 exactly; 4 is an anisotropic Gaussian drawn by seed, not K5
(see RESULTS.md). Writes ``benchmarks/results/table5.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

import lorun_peft
import lorun_peft.zoo
from lorun_peft.data import ImageFolder, modcrop

from .zoo import CS_RECIPE, K, PAPER_TABLE_V, choose_schedule, cs_operator, load_base, test_images, train400, training_images

BLOCK_LR = 1e-4  # full-weight fine-tuning from an already trained base: a tenth of the adapters' rate
SHARE = {"block-1": "base", "block-9": "none"}
RESULT = Path("benchmarks/results/table2.json")


def block_network(arm: str, ratio: float, data: Path, work: Path) -> lorun_peft.UnfoldedNetwork:
    """Block-1 or Block-9 over a copy of the task-trained base, with LoRun-9's untrained step choice."""
    init = work / f"cs-{ratio:.2f}" / "step_init.json"
    if not init.is_file():
        raise SystemExit(f"{init} is missing: run `python -m benchmarks.zoo train cs-{ratio:.2f} --work {work}` first")
    operator = cs_operator(ratio, training_images(data))
    net = lorun_peft.unfold(copy.deepcopy(load_base(work)), operator, K, share=SHARE[arm], noise_level=True)
    choose_schedule(net, [], init)  # reads the file: the same start as LoRun-9
    return net


def train(arm: str, ratio: float, data: Path, work: Path, minutes: float | None = None) -> Path | None:
    """Train ``arm`` at ``ratio`` for LoRun-9's step count (resumable); its network folder once done."""
    folder = work / "table2" / f"{arm}-{ratio:.2f}"
    net = block_network(arm, ratio, data, work)
    training, validation = train400(data)
    val = [ImageFolder(validation).full(i) for i in range(len(validation))]
    result = lorun_peft.train(
        net, ImageFolder(training, patch_size=CS_RECIPE["patch_size"]), steps=CS_RECIPE["steps"],
        batch_size=CS_RECIPE["batch_size"], lr=BLOCK_LR, checkpoint_dir=folder, checkpoint_every=50,
        val_data=val, val_every=100, time_limit=None if minutes is None else minutes * 60, desc=f"{arm} {ratio:.2f}",
    )
    (folder / "curve.json").write_text(json.dumps({"steps": result.step, "val_psnr": result.val_psnr}, indent=1))
    if result.step < CS_RECIPE["steps"]:
        print(f"{arm} {ratio:.2f}: stopped at step {result.step}; run again to continue", flush=True)
        return None
    net.eval().save_pretrained(folder / "network")
    return folder / "network"


@torch.no_grad()
def score(net: torch.nn.Module, images: list[torch.Tensor], names: list[str]) -> dict:
    mean = lorun_peft.evaluate(net.eval(), images, names=names).mean()
    report = net.parameter_report()
    return {"psnr": mean["psnr"], "ssim": mean["ssim"], "parameters": report.total - report.operator}


def table(ratios: list[float], data: Path, work: Path, before: Path) -> str:
    """Every arm on Set11 at each ratio; the markdown table (and RESULT)."""
    images, names = test_images(data, "set11", None)
    rows, results = [], {}
    for ratio in ratios:
        name = f"cs-{ratio:.2f}"
        task_base = load_base(work)
        arms = {
            "LoRun-9, Gaussian base (the zoo before)": lorun_peft.zoo.load(name, root=before),
            "task-trained base, plug-and-play": block_network("block-1", ratio, data, work),
            "LoRun-9, task-trained base": lorun_peft.load(task_base, work / name / "bundle"),
        }
        for arm in SHARE:
            folder = work / "table2" / f"{arm}-{ratio:.2f}" / "network"
            if folder.is_dir():
                arms[arm.replace("block", "Block")] = lorun_peft.UnfoldedNetwork.from_pretrained(folder)
        for label, net in arms.items():
            start = time.perf_counter()
            results[f"{name} {label}"] = figures = score(net.float(), images, names)
            rows.append(f"| {ratio:.2f} | {label} | {figures['psnr']:.2f} | {figures['ssim']:.4f} | {figures['parameters']:,} |")
            print(rows[-1], f"({time.perf_counter() - start:.0f} s)", flush=True)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(results, indent=1))
    head = ["| ratio | network | Set11 PSNR (dB) | SSIM | parameters (without the operator) |", "|---|---|---|---|---|"]
    return "\n".join(head + rows)


@torch.no_grad()
def table5(data: Path, out: Path = Path("benchmarks/results/table5.json")) -> str:
    """The zoo's SR bundles on gray BSD68 (border = scale shaved, noiseless) beside cubic and the paper."""
    folder = ImageFolder(data / "bsd68", channels=1, augment=False)
    rows, results = [], {}
    for name in [n for n in lorun_peft.zoo.list() if n.startswith("sr-")]:
        net = lorun_peft.zoo.load(name).float()
        scale, kernel = net.operator.scale, int(name.split("-k")[1])
        images = [modcrop(folder.full(i), scale) for i in range(len(folder))]
        mean = lorun_peft.evaluate(net, images, names=folder.names, border=scale).mean()
        paper = PAPER_TABLE_V[(scale, 0)] if kernel == 0 else None  # kernel_bank()[0] is its K1; [4] is not its K5
        results[name] = {"cubic_psnr": mean["x0_psnr"], "psnr": mean["psnr"], "ssim": mean["ssim"], "paper_psnr": paper}
        shown, gap = (f"{paper} (K1)", f"{mean['psnr'] - paper:+.2f}") if paper else (
            f"none comparable (its K5: {PAPER_TABLE_V[(scale, 4)]})", "")
        rows.append(f"| {name} | {mean['x0_psnr']:.2f} | **{mean['psnr']:.2f}** / {mean['ssim']:.4f} | {shown} | {gap} |")
        print(rows[-1], flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    head = ["| bundle | cubic | LoRun-9 (PSNR / SSIM) | paper U-Net LoRun-9 | difference |", "|---|---|---|---|---|"]
    return "\n".join(head + rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    go = sub.add_parser("train", help="train Block-1 or Block-9 at one ratio (resumable)")
    go.add_argument("arm", choices=sorted(SHARE))
    go.add_argument("--ratio", type=float, required=True)
    go.add_argument("--data", type=Path, required=True)
    go.add_argument("--work", type=Path, default=Path("runs/zoo-task"))
    go.add_argument("--minutes", type=float, default=None, help="stop after this many minutes, checkpointed")
    go.add_argument("--threads", type=int, default=1)
    show = sub.add_parser("table2", help="every arm on Set11 (markdown; benchmarks/results/table2.json)")
    show.add_argument("--ratios", type=float, nargs="+", default=[0.10, 0.25])
    show.add_argument("--data", type=Path, required=True)
    show.add_argument("--work", type=Path, default=Path("runs/zoo-task"))
    show.add_argument("--before", type=Path, required=True, help="the zoo folder with the Gaussian base's bundles")
    show.add_argument("--threads", type=int, default=1)
    sr = sub.add_parser("table5", help="the zoo's SR bundles on gray BSD68 beside cubic and the paper (markdown)")
    sr.add_argument("--data", type=Path, required=True)
    sr.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.command == "train":
        print(train(args.arm, args.ratio, args.data, args.work, args.minutes))
    elif args.command == "table2":
        print(table(args.ratios, args.data, args.work, args.before))
    else:
        print(table5(args.data))


if __name__ == "__main__":
    main()
