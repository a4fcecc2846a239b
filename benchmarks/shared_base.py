"""Does one base serve every CS ratio? The zoo's shared-base bundles against networks trained per ratio.

    python -m benchmarks.shared_base run 0.25 shared --data ../shared/data   # one variant per process
    python -m benchmarks.shared_base report --data ../shared/data            # table, plots, JSON

Every variant starts from the zoo's pretrained base (``runs/zoo/base``, train it first with
``python -m benchmarks.zoo train base``), uses the zoo's operator for the ratio (orthonormal rows,
linear MMSE initial estimate, kept as fitted) and its step initialisation (``runs/zoo/cs-R/step_init.json``,
chosen on held-out Train400 images), and trains the same number of steps with the zoo's recipe
(batch 4, 96 x 96 Train400 patches, cosine schedule; lr 1e-3 for adapters and steps, as the zoo; the
variants that fine-tune the pretrained base's own weights use lr 1e-4, since one Adam step at 1e-3
moves every weight by about 1e-3 and wrecks the pretrained denoiser: Block-9 fell from 29.6 to 18.9 dB
on two Set11 images after one step in a smoke run; 1e-4 is the usual fine-tuning rate, not tuned here):

- ``shared``: LoRun-9 over the frozen shared base (what the zoo ships);
- ``own``: LoRun-9 with its own base: the paper's Algorithm 1 at this ratio (half the steps as
  Block-1, fine-tuning the base, then half on the adapters over the base it made);
- ``block1``: Block-1, the base fine-tuned at this ratio and shared by the 9 stages;
- ``block9``: Block-9, nine copies of the base, each fine-tuned;
- ``pnp``: plug-and-play, the frozen shared base in the loop, only the step parameters trained.

The linear MMSE estimate is scored in the same run. Set11 is restored every ``EVERY`` steps to draw
PSNR against training minutes (reporting only: no setting is chosen on it); the final scores are on
Set11 at full size (and BSD68 with ``--bsd68``). Bytes on disk: what serving the three ratios takes, float32 files as
the library writes them.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

import lorun_peft
from lorun_peft.data import ImageFolder
from lorun_peft.steps import geometric
from lorun_peft.training.recipe import PAPER, train_two_phase

from . import zoo
from .common import RESULTS

VARIANTS = {"shared": "lora", "own": "base", "block1": "base", "block9": "none", "pnp": "base"}
LABELS = {"shared": "LoRun-9, shared base", "own": "LoRun-9, own base", "block1": "Block-1",
          "block9": "Block-9", "pnp": "plug-and-play (steps only)"}
RATIOS = (0.04, 0.10, 0.25)
STEPS = 200
EVERY = 50
TEST_SETS = ("set11",)  # BSD68 too (``--bsd68``) costs ~5 CPU-minutes per run: left out of the first pass
FINETUNE_LR = 1e-4  # for the base's own weights (own's first phase, block1, block9)


def build(variant: str, ratio: float, data: Path, zoo_work: Path) -> lorun_peft.UnfoldedNetwork:
    """The variant's untrained network: the zoo's base, operator and step initialisation."""
    operator = zoo.cs_operator(ratio, ImageFolder(zoo.train400(data)[0]), learn_matrix=False)
    net = lorun_peft.unfold(zoo.load_base(zoo_work), operator, zoo.K, gamma=zoo.CS_RECIPE["gamma"],
                            share=VARIANTS[variant], noise_level=True)
    init_file = zoo_work / f"cs-{ratio:.2f}" / "step_init.json"
    if not init_file.exists():
        raise SystemExit(f"{init_file} is missing: run `python -m benchmarks.zoo train cs-{ratio:.2f}` first")
    init = json.loads(init_file.read_text())
    net.steps.initialise(step=init["step"], sigma=geometric(init["sigma_first"], init["sigma_last"], zoo.K))
    if variant == "pnp":
        net.denoisers.requires_grad_(False)
    return net


def run(variant: str, ratio: float, data: Path, work: Path, zoo_work: Path, steps: int = STEPS,
        test_sets: tuple[str, ...] = TEST_SETS) -> dict:
    """Train one variant (resumable), then score it; writes ``work/cs-R/VARIANT/result.json``."""
    folder = work / f"cs-{ratio:.2f}" / variant
    folder.mkdir(parents=True, exist_ok=True)
    net = build(variant, ratio, data, zoo_work)
    training, _ = zoo.train400(data)
    patches = ImageFolder(training, patch_size=zoo.CS_RECIPE["patch_size"])
    set11 = zoo.test_images(data, "set11", None)[0]
    options = {"batch_size": zoo.CS_RECIPE["batch_size"], "lr": zoo.CS_RECIPE["lr"], "checkpoint_every": 50,
               "val_data": set11, "val_every": EVERY}
    start_file = folder / "untrained.json"  # the curve's first point, measured once
    if not start_file.exists():
        start_file.write_text(json.dumps(lorun_peft.evaluate(net, set11).mean()["psnr"]))
    if variant == "own":
        two = train_two_phase(net, patches, steps=steps // 2, adapter_steps=steps - steps // 2, lr=FINETUNE_LR, phases=PAPER,
                              adapter_lr=zoo.CS_RECIPE["lr"], gamma=zoo.CS_RECIPE["gamma"], checkpoint_dir=folder,
                              **{k: v for k, v in options.items() if k != "lr"})
        phases = [two.backbone, two.adapters]
    else:
        if variant in ("block1", "block9"):
            options["lr"] = FINETUNE_LR
        phases = [lorun_peft.train(net, patches, steps=steps, checkpoint_dir=folder, desc=variant, **options)]
    curve, offset, done = [(0, 0.0, json.loads(start_file.read_text()))], 0.0, 0
    for phase in phases:
        curve += [(done + s, offset + t, p) for (s, p), t in zip(phase.val_psnr, phase.val_seconds)]
        offset, done = offset + phase.train_seconds, done + phase.step
    net.eval()
    figures = zoo.test_figures(net, data, test_sets)
    result = {"variant": variant, "ratio": ratio, "steps": steps, "train_seconds": offset,
              "set11_curve": curve, "figures": figures, "bytes": served_bytes(variant, net)}
    (folder / "result.json").write_text(json.dumps(result, indent=1))
    return result


def served_bytes(variant: str, net: lorun_peft.UnfoldedNetwork) -> dict[str, int]:
    """Bytes of one ratio's own files and of what every ratio shares (float32, as saved)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if variant in ("shared", "own"):
            net.save_base(folder / "base")
            net.save_adapters(folder / "bundle")
            base = sum(f.stat().st_size for f in (folder / "base").rglob("*.safetensors"))
            task = sum(f.stat().st_size for f in (folder / "bundle").rglob("*.safetensors"))
            return {"shared": base, "per_ratio": task} if variant == "shared" else {"shared": 0, "per_ratio": base + task}
        from safetensors.torch import save_file

        state = {k: v.contiguous() for k, v in net.state_dict().items()}
        if variant == "pnp":  # the base is shared; a ratio needs its steps and operator only
            base = {k: v for k, v in state.items() if k.startswith("denoisers.")}
            save_file(base, str(folder / "base.safetensors"))
            save_file({k: v for k, v in state.items() if k not in base}, str(folder / "task.safetensors"))
            return {"shared": (folder / "base.safetensors").stat().st_size, "per_ratio": (folder / "task.safetensors").stat().st_size}
        save_file(state, str(folder / "net.safetensors"))
        return {"shared": 0, "per_ratio": (folder / "net.safetensors").stat().st_size}


def report(work: Path) -> dict:
    """Collect every finished run into ``benchmarks/results/shared_base.json``, a table in
    markdown, and PSNR-against-minutes plots (``shared_base_curves.png``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results: dict[str, dict[str, dict]] = {}
    for file in sorted(work.glob("cs-*/*/result.json")):
        r = json.loads(file.read_text())
        results.setdefault(f"{r['ratio']:.2f}", {})[r["variant"]] = r
    def cell(figures: dict, name: str, prefix: str = "") -> str:
        f = figures.get(name)
        return f"{f[prefix + 'psnr']:.2f} / {f[prefix + 'ssim']:.4f}" if f else "not run"

    rows = ["| ratio | variant | Set11 PSNR / SSIM | BSD68 PSNR / SSIM | steps | training minutes |", "|---|---|---|---|---|---|"]
    for ratio, runs in sorted(results.items()):
        first: dict = {}  # the linear estimate's figures, from whichever run scored each test set
        for r in runs.values():
            first = {**r["figures"], **first}
        rows.append(f"| {ratio} | linear MMSE (same run) | {cell(first, 'set11', 'linear_')} | {cell(first, 'bsd68', 'linear_')} | 0 | 0 |")
        for variant in VARIANTS:
            if variant in runs:
                r, f = runs[variant], runs[variant]["figures"]
                rows.append(f"| {ratio} | {LABELS[variant]} | {cell(f, 'set11')} | {cell(f, 'bsd68')} | {r['steps']} | "
                            f"{r['train_seconds'] / 60:.1f} |")
    served = ["| variant | bytes to serve all three ratios |", "|---|---|"]
    for variant in VARIANTS:
        sizes = [runs[variant]["bytes"] for runs in results.values() if variant in runs]
        if len(sizes) == len(RATIOS):
            served.append(f"| {LABELS[variant]} | {sizes[0]['shared'] + sum(s['per_ratio'] for s in sizes):,} |")
    ratios = sorted(results)
    fig, axes = plt.subplots(1, len(ratios), figsize=(5 * len(ratios), 4), squeeze=False)
    colours = dict(zip(VARIANTS, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for ax, ratio in zip(axes[0], ratios):
        for variant in VARIANTS:
            if variant in results[ratio]:
                curve = results[ratio][variant]["set11_curve"]
                ax.plot([t / 60 for _, t, _ in curve], [p for _, _, p in curve], marker="o", color=colours[variant],
                        label=LABELS[variant])
        linear = next(iter(results[ratio].values()))["figures"]["set11"]["linear_psnr"]
        ax.axhline(linear, color="gray", linestyle="--", label="linear MMSE (no training)")
        ax.set(title=f"block CS, ratio {ratio}", xlabel="training time (minutes, one thread)", ylabel="Set11 PSNR (dB)")
        ax.grid(alpha=0.3)
    handles = {label: handle for ax in axes[0] for handle, label in zip(*ax.get_legend_handles_labels())}
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(6, len(handles)), fontsize=8)
    fig.suptitle("Set11 PSNR against training time, every variant starting from the same pretrained base")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    plot = RESULTS / "shared_base_curves.png"
    fig.savefig(plot, dpi=110)
    out = {"results": results, "table": "\n".join(rows), "bytes": "\n".join(served), "plot": str(plot)}
    (RESULTS / "shared_base.json").write_text(json.dumps(out, indent=1))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("run", help="train and score one variant at one ratio (resumable)")
    one.add_argument("ratio", type=float, choices=RATIOS)
    one.add_argument("variant", choices=sorted(VARIANTS))
    one.add_argument("--steps", type=int, default=STEPS)
    one.add_argument("--bsd68", action="store_true", help="also score BSD68 (about 5 CPU-minutes more)")
    for p in (one, sub.add_parser("report", help="table and plots of the finished runs")):
        p.add_argument("--data", type=Path, required=True)
        p.add_argument("--work", type=Path, default=Path("runs/shared_base"))
        p.add_argument("--zoo-work", type=Path, default=Path("runs/zoo"))
        p.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.command == "run":
        sets = (*TEST_SETS, "bsd68") if args.bsd68 else TEST_SETS
        result = run(args.variant, args.ratio, args.data, args.work, args.zoo_work, args.steps, sets)
        print(json.dumps({k: v for k, v in result.items() if k != "set11_curve"}, indent=1))
    else:
        out = report(args.work)
        print(out["table"], out["bytes"], out["plot"], sep="\n\n")


if __name__ == "__main__":
    main()
