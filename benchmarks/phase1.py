"""The paper's phase 1 for the zoo: train the shared base as Block-1 under block CS (issue #24).

    python -m benchmarks.phase1 run fixed-0.50 --data ../shared/data --minutes 60   # one arm, resumable
    python -m benchmarks.phase1 run mixed --data ../shared/data --minutes 60        # the other, side by side
    python -m benchmarks.phase1 curves                                               # the validation curves (+ png)
    python -m benchmarks.phase1 save mixed --out runs/zoo-task/base/denoiser.safetensors   # float16 weights
    python -m benchmarks.phase1 run mixed --init benchmarks/results/phase1/mixed.safetensors --work runs/phase1b ...  # go on elsewhere
    python -m benchmarks.phase1 sr --base benchmarks/results/phase1/mixed.safetensors --data ../shared/data   # SR over it
    python -m benchmarks.phase1 run sr --data ../shared/data --work runs/phase1-sr --steps 1500 --minutes 60   # SR's own
    python -m benchmarks.phase1 run mixed --device cuda --batch-size 16 --patch-size 128 --steps 20000 --minutes 8 \
        --init benchmarks/results/phase1/mixed-step4000.safetensors --work runs/phase1-gpu --data ../shared/data   # on a GPU

Algorithm 1's phase 1: every stage calls ONE trainable denoiser (Block-1, ``share="base"``),
trained end to end with the L2 loss under the task. It starts from the zoo's shipped Gaussian-
denoiser base, measures with the zoo's own nested PCA basis (each ratio's shipped matrix, fixed)
and starts each ratio's step parameters from its shipped bundle. Two arms, the choice of Table VI:

- ``fixed-0.50``: every batch at ratio 0.50 (the paper's best beta);
- ``mixed``: the batches go round the zoo's five ratios, each ratio with its own step parameters,
  all over the same base.

A third arm, ``sr``, is phase 1 for a super-resolution family base (``base-sr/``): the batches go
round the zoo's four SR bundles (HQS, each bundle's kernel, scale and steps), starting from the
zoo's base. It is validated at those four, not at the CS ratios.

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

from .zoo import CS_RATIOS, K, SR_SETTINGS, check_same_recipe, train400

ARMS = {"fixed-0.50": ("cs-0.50",), "mixed": tuple(f"cs-{r:.2f}" for r in CS_RATIOS), "sr": tuple(SR_SETTINGS)}
RECIPE = {"steps": 4000, "batch_size": 4, "patch_size": 96, "lr": 2e-4, "precision": "fp32"}  # bf16 autocast: 10x slower on a CPU without AVX-512 BF16


def block1(base: nn.Module, task: str) -> lorun_peft.UnfoldedNetwork:
    """Block-1 over ``base`` (the module itself, not a copy) with zoo bundle ``task``'s operator,
    algorithm and steps."""
    shipped = lorun_peft.zoo.load(task)
    operator = shipped.operator.float()
    for p in operator.parameters():
        p.requires_grad_(False)
    net = lorun_peft.unfold(nn.Identity(), operator, K, algorithm=shipped.algorithm, share="base", noise_level=True)
    net.denoisers.denoiser = base  # shared: every task's network trains the same weights
    net.steps.load_state_dict({k: v.float() for k, v in shipped.steps.state_dict().items()})
    return net


def label(task: str) -> str:
    """A task's key in the validation curve: the ratio for CS ("0.25"), the bundle's name for SR."""
    return task.removeprefix("cs-")


class RoundRobin(nn.Module):
    """An operator that measures batch i with operator i mod n (the counter is a buffer, so a
    checkpoint resumes the order exactly); ``last`` is the index of the one that measured last."""

    def __init__(self, operators: list[nn.Module]) -> None:
        super().__init__()
        self.operators = nn.ModuleList(operators)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    @property
    def last(self) -> int:
        return (int(self.calls) - 1) % len(self.operators)

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        operator = self.operators[int(self.calls) % len(self.operators)]
        self.calls += 1
        with fit_operator(operator, x.shape[-2:]):
            return operator.A(x)


class TaskMixture(nn.Module):
    """Block-1 networks for several tasks over one shared base, trained as one by ``lorun_peft.train``:
    each batch is restored by the network whose operator measured it."""

    def __init__(self, base: nn.Module, tasks: tuple[str, ...]) -> None:
        super().__init__()
        self.base = base
        self.nets = nn.ModuleList(block1(base, t) for t in tasks)
        self.operator = RoundRobin([n.operator for n in self.nets])

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.nets[self.operator.last](y)


@torch.no_grad()
def validate(base: nn.Module, images: list[torch.Tensor], nets: dict[str, nn.Module]) -> dict[str, float]:
    """Mean PSNR of Block-1 over ``base`` for every task (keyed by :func:`label`), with the shipped
    bundles' steps."""
    was_training = base.training
    device = next(base.parameters()).device
    scores = {}
    for task, net in nets.items():
        net.eval()
        values = []
        for x in images:
            x = x[None].to(device)
            with fit_operator(net.operator, x.shape[-2:]):
                values.append(float(psnr(net(net.operator.A(x)).clamp(0, 1), x)))
        scores[label(task)] = sum(values) / len(values)
    base.train(was_training)
    return scores


def start_base(init: Path | None) -> nn.Module:
    """The zoo's shipped base, or a base saved by ``save`` (a phase-1 result carried to another machine)."""
    base = lorun_peft.zoo.load_base().float()
    if init is not None:
        base.load_state_dict({k: v.float() for k, v in load_file(str(init)).items()})
    return base


def run(arm: str, data: Path, work: Path, minutes: float, chunk_minutes: float = 10.0, steps: int = RECIPE["steps"],
        init: Path | None = None, device: str = "cpu", batch_size: int = RECIPE["batch_size"],
        patch_size: int = RECIPE["patch_size"]) -> dict:
    """Train ``arm`` for ``minutes`` (resumable, with the recipe it started with), validating every
    ``chunk_minutes``; ``init``: start from a base ``save`` wrote instead of the zoo's (a new
    schedule, a new curve); ``device``, ``batch_size``, ``patch_size``: a GPU's recipe."""
    folder = work / arm
    folder.mkdir(parents=True, exist_ok=True)
    recipe = {**RECIPE, "steps": steps, "batch_size": batch_size, "patch_size": patch_size}
    curve_file = folder / "curve.json"
    record = json.loads(curve_file.read_text()) if curve_file.exists() else {
        "arm": arm, "tasks": list(ARMS[arm]), "recipe": recipe, "init": str(init or "the zoo's base"),
        "curve": [], "train_seconds": 0.0}
    check_same_recipe(folder, record["recipe"], recipe)
    training, validation = train400(data)
    val = [ImageFolder(validation).full(i) for i in range(len(validation))]
    patches = ImageFolder(training, patch_size=patch_size)
    mixture = TaskMixture(start_base(init), ARMS[arm]).to(device)
    family = ARMS["sr"] if arm == "sr" else ARMS["mixed"]  # every CS arm is measured at all five ratios
    yardstick = {t: block1(mixture.base, t).to(device) for t in family}
    if not record["curve"]:  # the start: the Gaussian base as plug-and-play with the shipped steps
        record["curve"].append([0, validate(mixture.base, val, yardstick)])
        curve_file.write_text(json.dumps(record, indent=1))
    deadline = time.perf_counter() + minutes * 60
    step = record["curve"][-1][0]
    while step < steps and time.perf_counter() < deadline:
        chunk = min(chunk_minutes * 60, deadline - time.perf_counter())
        result = lorun_peft.train(mixture, patches, steps=steps, batch_size=batch_size, lr=RECIPE["lr"],
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
    keys = list(records[0]["curve"][0][1]) if records else []  # the CS ratios, or the SR bundles
    lines = ["| arm | step | " + " | ".join(keys) + " | mean |", "|---" * (len(keys) + 3) + "|"]
    fig, axes = plt.subplots(1, max(len(keys), 1), figsize=(4 * max(len(keys), 1), 3.2), squeeze=False)
    for record in records:
        for step, scores in record["curve"]:
            values = [scores[k] for k in keys]
            lines.append(f"| {record['arm']} | {step} | " + " | ".join(f"{v:.2f}" for v in values) + f" | {sum(values) / len(values):.2f} |")
        for ax, key in zip(axes[0], keys):
            ax.plot([s for s, _ in record["curve"]], [v[key] for _, v in record["curve"]], marker="o", label=record["arm"])
            ax.set_title(f"ratio {key}" if key[0].isdigit() else key)
            ax.set_xlabel("phase-1 step")
    axes[0][0].set_ylabel("validation PSNR (dB)")
    axes[0][0].legend()
    fig.suptitle("Phase 1: Block-1 over each arm's base for every task, the shipped bundles' step values, "
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
    go.add_argument("--device", default="cpu", help="where to train: cpu, cuda, cuda:1, ...")
    go.add_argument("--batch-size", type=int, default=RECIPE["batch_size"])
    go.add_argument("--patch-size", type=int, default=RECIPE["patch_size"])
    keep = sub.add_parser("save", help="write an arm's base in float16")
    keep.add_argument("arm", choices=sorted(ARMS))
    keep.add_argument("--work", type=Path, default=Path("runs/phase1"))
    keep.add_argument("--out", type=Path, required=True)
    show = sub.add_parser("curves", help="every arm's validation curve in WORK (markdown) and a figure")
    show.add_argument("--work", type=Path, default=Path("runs/phase1"))
    show.add_argument("--out", type=Path, default=Path("benchmarks/results/phase1.png"), help="the figure")
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
        run(args.arm, args.data, args.work, args.minutes, args.chunk_minutes, args.steps, args.init, args.device,
            args.batch_size, args.patch_size)
    elif args.command == "save":
        print(save(args.arm, args.work, args.out))
    else:
        print(curves(args.work, args.out))


if __name__ == "__main__":
    main()
