"""The paper's phase 1 for the zoo: train the shared base as Block-1 under block CS (issue #24).

    python -m benchmarks.phase1 run fixed-0.50 --data ../shared/data --minutes 60   # one arm, resumable
    python -m benchmarks.phase1 run mixed --data ../shared/data --minutes 60        # the other, side by side
    python -m benchmarks.phase1 curves                                               # the validation curves (+ png)
    python -m benchmarks.phase1 save mixed --out runs/zoo-task/base/denoiser.safetensors   # float16 weights
    python -m benchmarks.phase1 run mixed --init benchmarks/results/phase1/mixed.safetensors --work runs/phase1b ...  # go on elsewhere
    python -m benchmarks.phase1 sr --base benchmarks/results/phase1/mixed.safetensors --data ../shared/data   # SR over it

Algorithm 1's phase 1: every stage calls ONE trainable denoiser (Block-1, ``share="base"``),
trained end to end with the L2 loss under the task. It starts from the zoo's shipped Gaussian-
denoiser base, measures with the zoo's own nested PCA basis (each ratio's shipped matrix, fixed)
and starts each ratio's step parameters from its shipped bundle. Two arms, the choice of Table VI:

- ``fixed-0.50``: every batch at ratio 0.50 (the paper's best beta);
- ``mixed``: the batches go round the zoo's five ratios, each ratio with its own step parameters,
  all over the same base.

Each run trains until ``--minutes`` are spent, checkpointing, then stops; run it again to go on
(the cosine schedule spans ``--steps``). Every ``--chunk-minutes`` the base is validated as
Block-1 at every ratio with the shipped bundles' step values (the same yardstick for both arms)
on Train400's 10 held-out images, and the curve goes to ``WORK/ARM/curve.json``. Train400 only:
the test sets are never read here.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

import lorun_peft
import lorun_peft.zoo
from lorun_peft.data import ImageFolder
from lorun_peft.metrics import psnr
from lorun_peft.operators.base import fit_operator
from lorun_peft.persistence.atomic import permit
from lorun_peft.training.loop import CHECKPOINT_NAME

from .zoo import CS_RATIOS, K, train400

ARMS = {"fixed-0.50": (0.50,), "mixed": CS_RATIOS}
RECIPE = {"steps": 4000, "batch_size": 4, "patch_size": 96, "lr": 2e-4, "precision": "fp32"}  # bf16 autocast: 10x slower on a CPU without AVX-512 BF16


def block1(base: nn.Module, ratio: float) -> lorun_peft.UnfoldedNetwork:
    """Block-1 over ``base`` (the module itself, not a copy) with the zoo bundle's operator and steps."""
    shipped = lorun_peft.zoo.load(f"cs-{ratio:.2f}")
    operator = shipped.operator.float()
    for p in operator.parameters():
        p.requires_grad_(False)
    net = lorun_peft.unfold(nn.Identity(), operator, K, share="base", noise_level=True)
    net.denoisers.denoiser = base  # shared: every ratio's network trains the same weights
    net.steps.load_state_dict({k: v.float() for k, v in shipped.steps.state_dict().items()})
    return net


class RoundRobin(nn.Module):
    """An operator that measures batch i at ratio i mod n (the counter is a buffer, so a checkpoint
    resumes the order exactly); the mixture restores with the network whose rows fit ``y``."""

    def __init__(self, operators: list[nn.Module]) -> None:
        super().__init__()
        self.operators = nn.ModuleList(operators)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        operator = self.operators[int(self.calls) % len(self.operators)]
        self.calls += 1
        with fit_operator(operator, x.shape[-2:]):
            return operator.A(x)


class RatioMixture(nn.Module):
    """Block-1 networks at several ratios over one shared base, trained as one by ``lorun_peft.train``."""

    def __init__(self, base: nn.Module, ratios: tuple[float, ...]) -> None:
        super().__init__()
        self.base = base
        self.nets = nn.ModuleList(block1(base, r) for r in ratios)
        self.operator = RoundRobin([n.operator for n in self.nets])
        self.by_rows = {n.operator.measurements: n for n in self.nets}

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.by_rows[y.shape[1]](y)


@torch.no_grad()
def validate(base: nn.Module, images: list[torch.Tensor], nets: dict[float, nn.Module]) -> dict[str, float]:
    """Mean PSNR of Block-1 over ``base`` at every ratio, with the shipped bundles' steps."""
    was_training = base.training
    scores = {}
    for ratio, net in nets.items():
        net.eval()
        values = []
        for x in images:
            x = x[None]
            with fit_operator(net.operator, x.shape[-2:]):
                values.append(float(psnr(net(net.operator.A(x)).clamp(0, 1), x)))
        scores[f"{ratio:.2f}"] = sum(values) / len(values)
    base.train(was_training)
    return scores


def start_base(init: Path | None) -> nn.Module:
    """The zoo's shipped base, or a base saved by ``save`` (a phase-1 result carried to another machine)."""
    base = lorun_peft.zoo.load_base().float()
    if init is not None:
        base.load_state_dict({k: v.float() for k, v in load_file(str(init)).items()})
    return base


def run(arm: str, data: Path, work: Path, minutes: float, chunk_minutes: float = 10.0, steps: int = RECIPE["steps"],
        init: Path | None = None) -> dict:
    """Train ``arm`` for ``minutes`` (resumable), validating every ``chunk_minutes``; ``init``: start
    from a base ``save`` wrote instead of the zoo's (a new schedule, a new curve)."""
    folder = work / arm
    folder.mkdir(parents=True, exist_ok=True)
    training, validation = train400(data)
    val = [ImageFolder(validation).full(i) for i in range(len(validation))]
    patches = ImageFolder(training, patch_size=RECIPE["patch_size"])
    mixture = RatioMixture(start_base(init), ARMS[arm])
    yardstick = {r: block1(mixture.base, r) for r in CS_RATIOS}
    curve_file = folder / "curve.json"
    record = json.loads(curve_file.read_text()) if curve_file.exists() else {
        "arm": arm, "ratios": list(ARMS[arm]), "recipe": {**RECIPE, "steps": steps}, "init": str(init or "the zoo's base"),
        "curve": [], "train_seconds": 0.0}
    if not record["curve"]:  # the start: the Gaussian base as plug-and-play with the shipped steps
        record["curve"].append([0, validate(mixture.base, val, yardstick)])
        curve_file.write_text(json.dumps(record, indent=1))
    deadline = time.perf_counter() + minutes * 60
    step = record["curve"][-1][0]
    while step < steps and time.perf_counter() < deadline:
        chunk = min(chunk_minutes * 60, deadline - time.perf_counter())
        result = lorun_peft.train(mixture, patches, steps=steps, batch_size=RECIPE["batch_size"], lr=RECIPE["lr"],
                                  precision=RECIPE["precision"], checkpoint_dir=folder, checkpoint_every=50,
                                  time_limit=chunk, desc=arm)
        step = result.step
        scores = validate(mixture.base, val, yardstick)
        record["curve"].append([step, scores])
        record["train_seconds"] = result.train_seconds
        curve_file.write_text(json.dumps(record, indent=1))
        print(f"{arm} step {step}: " + ", ".join(f"{r} {v:.2f}" for r, v in scores.items()), flush=True)
    return record


def save(arm: str, work: Path, out: Path) -> Path:
    """The arm's trained base from its checkpoint, in float16 (how the zoo ships it)."""
    state = torch.load(work / arm / CHECKPOINT_NAME, weights_only=True, map_location="cpu")["model"]
    weights = {k.removeprefix("base."): v.half().contiguous() for k, v in state.items() if k.startswith("base.")}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(out))
    permit(out)  # safetensors writes 0600
    return out


@torch.no_grad()
def sr_over(base_file: Path, data: Path) -> str:
    """Every shipped SR bundle on Set5 and Set14 (luma, border shaved; the zoo's protocol) over its own
    base and over the base in ``base_file``, its adapters and steps as they are (not retrained): does
    one base still serve SR? The fingerprint check that keeps a bundle on its base is bypassed here
    on purpose. A markdown table."""
    from lorun_peft.persistence.fingerprint import fingerprint
    from lorun_peft.persistence.reading import read_bundle

    from .zoo import test_figures

    other = start_base(base_file).eval()
    lines = ["| bundle | test set | cubic | own base | other base | difference |", "|---|---|---|---|---|---|"]
    for name in [n for n in lorun_peft.zoo.list() if n.startswith("sr-")]:
        own = test_figures(lorun_peft.zoo.load(name).float(), data, ("set5", "set14"))
        bundle = read_bundle(lorun_peft.zoo.bundle_path(name))
        bundle.config["base_fingerprint"] = fingerprint(other)
        moved = test_figures(lorun_peft.load(other, bundle).float().eval(), data, ("set5", "set14"))
        for test in ("set5", "set14"):
            a, b = own[test]["psnr"], moved[test]["psnr"]
            lines.append(f"| {name} | {test} | {own[test]['linear_psnr']:.2f} | {a:.2f} | {b:.2f} | {b - a:+.2f} |")
            print(lines[-1], flush=True)
    return "\n".join(lines)


def curves(work: Path, out: Path = Path("benchmarks/results/phase1.png")) -> str:
    """A markdown table of every arm's validation curve and a figure of the same."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(f.read_text()) for f in sorted(work.glob("*/curve.json"))]
    lines = ["| arm | step | " + " | ".join(f"{r:.2f}" for r in CS_RATIOS) + " | mean |", "|---" * (len(CS_RATIOS) + 3) + "|"]
    fig, axes = plt.subplots(1, len(CS_RATIOS), figsize=(4 * len(CS_RATIOS), 3.2), squeeze=False)
    for record in records:
        for step, scores in record["curve"]:
            values = [scores[f"{r:.2f}"] for r in CS_RATIOS]
            lines.append(f"| {record['arm']} | {step} | " + " | ".join(f"{v:.2f}" for v in values) + f" | {sum(values) / len(values):.2f} |")
        for ax, r in zip(axes[0], CS_RATIOS):
            ax.plot([s for s, _ in record["curve"]], [v[f"{r:.2f}"] for _, v in record["curve"]], marker="o", label=record["arm"])
            ax.set_title(f"ratio {r:.2f}")
            ax.set_xlabel("phase-1 step")
    axes[0][0].set_ylabel("validation PSNR (dB)")
    axes[0][0].legend()
    fig.suptitle("Phase 1: Block-1 over each arm's base at every ratio, the shipped bundles' step values, "
                 "Train400's 10 held-out images")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    go = sub.add_parser("run", help="train one arm for --minutes (resumable)")
    go.add_argument("arm", choices=sorted(ARMS))
    go.add_argument("--data", type=Path, required=True, help="the shared data folder (with train400/)")
    go.add_argument("--work", type=Path, default=Path("runs/phase1"))
    go.add_argument("--minutes", type=float, required=True)
    go.add_argument("--chunk-minutes", type=float, default=10.0, help="validate this often")
    go.add_argument("--steps", type=int, default=RECIPE["steps"], help="the cosine schedule's length")
    go.add_argument("--threads", type=int, default=1)
    go.add_argument("--init", type=Path, default=None, help="start from a base written by `save` (default the zoo's)")
    keep = sub.add_parser("save", help="write an arm's base in float16")
    keep.add_argument("arm", choices=sorted(ARMS))
    keep.add_argument("--work", type=Path, default=Path("runs/phase1"))
    keep.add_argument("--out", type=Path, required=True)
    show = sub.add_parser("curves", help="every arm's validation curve (markdown) and benchmarks/results/phase1.png")
    show.add_argument("--work", type=Path, default=Path("runs/phase1"))
    moved = sub.add_parser("sr", help="the shipped SR bundles over another base, not retrained (markdown)")
    moved.add_argument("--base", type=Path, required=True, help="a base written by `save`")
    moved.add_argument("--data", type=Path, required=True)
    moved.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.command == "sr":
        torch.set_num_threads(args.threads)
        print(sr_over(args.base, args.data))
    elif args.command == "run":
        torch.set_num_threads(args.threads)
        run(args.arm, args.data, args.work, args.minutes, args.chunk_minutes, args.steps, args.init)
    elif args.command == "save":
        print(save(args.arm, args.work, args.out))
    else:
        print(curves(args.work))


if __name__ == "__main__":
    main()
