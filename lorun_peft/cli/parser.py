"""The ``lorun`` command line: train, eval, restore, measure, export, inspect, plot, convert, demo, push and pull.

This module only parses arguments (``lorun --help`` and argument errors answer without importing
torch); the commands run in :mod:`lorun_peft.cli.commands`. ``lorun demo`` swaps the pretrained zoo's
CS bundles on one image, then runs the paper's two-phase training on built-in images, in about two
minutes on a CPU. ``lorun train`` trains with the recipe of :mod:`lorun_peft.training.recipe` (or
``--phase paper``) and writes ``DIR/model/`` (the network as ``save_pretrained`` writes it),
``DIR/train_log.json`` and resumable checkpoints under ``DIR/checkpoints``; ``eval``, ``restore``,
``export``, ``inspect``, ``plot`` and ``convert`` take ``--model`` as any saved form :mod:`lorun_peft.resolve`
reads (a run or saved-network folder, a bundle with ``--base``, a Hub id with ``--subfolder`` and
``--revision``, or ``zoo:cs-0.25``, which needs no training and no network); ``eval`` and ``restore``
also take a file written by ``lorun export`` (``--model cs.onnx``, run on onnxruntime). Errors (bad
arguments, missing or unreadable files) print one line on stderr and exit with status 2.

>>> parser = build_parser()
>>> parser.parse_args(["demo", "--steps", "5"]).steps
5
>>> parser.parse_args(["train", "--task", "sr", "--scale", "2", "--out", "run"]).scale
2
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from ..errors import LorunError
from ..tasks.plugins import plugin_failures
from ..tasks import Option, registered_tasks, task_named, task_names

__all__ = ["main", "build_parser", "add_bundle_commands", "DENOISER_NAMES"]

DENOISER_NAMES = ("transformer", "unet")  # lorun_peft.denoisers.DENOISERS, named here so --help needs no torch
TESTSET_NAMES = "set5, set14, bsd100, urban100, cbsd68, set11, set12, bsd68"  # lorun_peft.data.testsets, named here: no torch
MODEL_HELP = ("a `lorun train --out` folder, a folder written by save_pretrained, a task bundle folder (with its base: "
              "--base, or base/ beside it), a Hub repo id (with --subfolder, --revision), or a shipped zoo bundle: "
              "zoo:cs-0.25 (see `lorun_peft.zoo.list()`)")
INFERENCE_COMMANDS = ("restore", "eval", "measure", "plot", "app")  # --threads defaults to every core for these


def default_threads(command: str) -> int:
    """``--threads`` when not given: every core this process may use for restoring, 1 for training."""
    if command not in INFERENCE_COMMANDS:
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


TILE_HELP = ("restore larger images tile by tile, tiles of this side in pixels (default: the largest the available "
             "memory allows; an image that fits is restored whole)")
GRAY_HELP = ("read colour images as gray (by default a gray model restores colour in colour: cs, deblurring and "
             "inpainting channel by channel, sr the luma with the chroma from the operator's cubic estimate)")


def _model_options(p: argparse.ArgumentParser, required: bool = True, sources: bool = True) -> None:
    """--model and where it comes from (a bundle's base; a Hub repo's subfolder and revision)."""
    p.add_argument("--model", dest="model", required=required, help=MODEL_HELP + ("" if required else "; without it the network options describe one"))
    if sources:
        p.add_argument("--base", default=None, help="for a task bundle: its base (a folder written by save_base, a Hub repo, 'zoo' or 'zoo:cs')")
        p.add_argument("--subfolder", default=None, help="the model's folder inside the Hub repo (or local folder)")
        p.add_argument("--revision", default=None, help="Hub branch, tag or commit (default main)")


# =============================================================================== the parser
def _task_options(group: Any) -> None:
    """Every registered task's options, each flag once; the help says which tasks use it."""
    users: dict[str, list[tuple[str, Option]]] = {}
    for name in registered_tasks():
        for option in task_named(name).options:
            users.setdefault(option.flag, []).append((name, option))
    for flag, used in users.items():
        option = used[0][1]
        texts = {o.help for _, o in used}
        helps = [f"{', '.join(n for n, o in used if o.help == text)}: {text}" for text in texts] if len(texts) > 1 else None
        option.add_to(group, [n for n, _ in used], help="; ".join(sorted(helps)) if helps else None)


def _network_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("network")
    g.add_argument("--task", choices=task_names(), default="cs",
                   help="; ".join(f"{name}: {task_named(name).summary}" for name in task_names()))
    _task_options(g)
    g.add_argument("--channels", type=int, choices=(1, 3), help="image channels: 1 gray, 3 RGB (default: what --data holds, 3 if any image is colour; on built-in images 1 for cs, 3 for sr)")
    g.add_argument("--denoiser", choices=DENOISER_NAMES, default="unet", help="reference denoiser (default unet)")
    g.add_argument("--width", type=int, default=16, help="denoiser width (U-Net channels / Transformer dim; default 16)")
    g.add_argument("--depth", type=int, default=2, help="denoiser depth (default 2)")
    g.add_argument("--K", type=int, default=9, help="number of stages (default 9)")
    g.add_argument("--gamma", type=float, help="LoRA rank rule percentage (default 10)")
    g.add_argument("--algorithm", choices=("pgd", "hqs"), default="pgd", help="data step (default pgd)")
    g.add_argument("--adapter", choices=("lora", "dora", "loha", "lokr"), default="lora", help="PEFT adapter kind (default lora)")
    g.add_argument("--patch", type=int, default=64, help="training patch size; cassi: also the mask size (default 64)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="random seed that makes a run repeatable (default 0): it fixes the "
                   "noise drawn for --noise-sigma and, where the command draws them, a new operator's random mask or "
                   "sampling matrix, the training crops and batch order and the adapters' first values (a saved model "
                   "keeps its own operator)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: every core this process may use for "
                   f"{', '.join(INFERENCE_COMMANDS)}; 1 for the others, the fastest for training's small tensors on a shared CPU)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default auto: cuda when available)")


def _phase(value: str) -> str:
    """``--phase``: 'both', the earlier release's name of the paper's two phases, is 'paper'."""
    return "paper" if value == "both" else value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lorun", description="Deep LoRA-unfolding networks on PEFT.")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="pretrain the denoiser, then LoRun's adapters (or Algorithm 1 with --phase paper), on a folder or built-in images")
    _network_options(t)
    g = t.add_argument_group("training")
    g.add_argument("--data", type=Path, help="folder of training images (.npy/.mat cubes for cassi); default built-in images")
    g.add_argument("--val", type=Path, help="folder of validation images (whole images), or a standard test set's name "
                   f"({TESTSET_NAMES}: `lorun data list`); default built-in images when --data is not given")
    g.add_argument("--phase", choices=("recipe", "paper", "denoiser", "backbone", "adapters"), default="recipe",
                   type=_phase,
                   help="recipe (default): pretrain the denoiser as a Gaussian denoiser, set the steps for it on the "
                        "validation images, then train the adapters; paper: Algorithm 1, Block-1 unfolded, then the "
                        "adapters (also spelled 'both', the earlier release's name); or one phase alone")
    g.add_argument("--init", type=Path, help="with --phase adapters: a model to continue (the --out folder of an earlier run, or zoo:NAME)")
    g.add_argument("--base", help="with --phase adapters: start from a pretrained base denoiser: 'zoo' (the zoo's gray "
                                  "Gaussian-denoiser U-Net), 'zoo:cs' (the base of the zoo's CS bundles; the bundle then "
                                  "swaps into their networks) or a folder written by save_base")
    g.add_argument("--steps", type=int, default=1000, help="training steps per phase (default 1000)")
    g.add_argument("--adapter-steps", type=int, help="steps of the adapter phase (default --steps)")
    g.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    g.add_argument("--adapter-lr", type=float, help="learning rate of the adapter phase (default --lr)")
    g.add_argument("--batch-size", type=int, default=8, help="per process (default 8)")
    g.add_argument("--noise-sigma", type=float, default=0.0, help="std of the Gaussian noise added to every measurement "
                   "y in training and validation, in image units (pixels in [0, 1]: 0.01 is 2.55/255; default 0, no noise)")
    g.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="the unfolded phases' forward pass under autocast (default fp32; weights stay float32)")
    g.add_argument("--val-every", type=int, default=0, help="validate every N steps (default: at the end of each phase)")
    g.add_argument("--checkpoint-every", type=int, default=100, help="checkpoint every N steps (default 100)")
    g.add_argument("--fresh", action="store_true", help="ignore checkpoints in --out and start over")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--out", type=Path, required=True, help="output folder: model/ (the network, as save_pretrained writes it), train_log.json, checkpoints/")
    _common(t)

    e = sub.add_parser("eval", help="PSNR / SSIM per image and mean, as a table and optionally CSV / JSON")
    _model_options(e)
    e.add_argument("--data", type=Path, help=f"folder of test images, or a standard test set's name ({TESTSET_NAMES}: "
                   "`lorun data list`; downloaded once into the Hugging Face cache); default built-in images")
    e.add_argument("--noise-sigma", type=float, default=0.0, help="std of the Gaussian noise added to every measurement "
                   "y, in image units (pixels in [0, 1]: 0.01 is 2.55/255; default 0, no noise); --seed fixes the draw")
    e.add_argument("--y-channel", action=argparse.BooleanOptionalAction, help="measure RGB on the luma channel (default: on for sr)")
    e.add_argument("--border", type=int, help="pixels shaved before measuring (default: the scale for sr, else 0)")
    e.add_argument("--luma", action="store_true", help="gray model, colour images: degrade and restore each image's luma "
                   "(Y of YCbCr, as SR papers and the README's SR figures do) instead of its gray conversion")
    e.add_argument("--mask", type=Path, help="cassi: evaluate with this coded aperture (.mat key 'mask' or .npy, any size) instead of the training crop")
    e.add_argument("--gray", action="store_true", help=GRAY_HELP)
    e.add_argument("--tile", type=int, help=TILE_HELP)
    e.add_argument("--csv", type=Path, help="also write the table as CSV")
    e.add_argument("--json", type=Path, help="also write the table as JSON")
    _common(e)

    r = sub.add_parser("restore", help="degrade INPUT with the model's operator and restore it, or restore a measurement")
    _model_options(r)
    r.add_argument("input", type=Path, help="an image (.png/.tif/.bmp/.jpg), a cube (.npy/.mat), or with --measurement a measurement "
                   "(an image, .npy, .mat, or .npz from lorun measure)")
    r.add_argument("output", type=Path, help="OUTPUT.png (or .npy for the raw array)")
    r.add_argument("--mask", type=Path, help="cassi: the full coded aperture of the measurement's system (.mat key 'mask' or .npy), any size")
    r.add_argument("--real-scale", action="store_true", help="cassi: scale a real snapshot as TSA-Net's real-data code does "
                   "(clip to [0, 1], then meas / max * 0.8 * bands / 2, the training scale of this library's CASSI)")
    r.add_argument("--gray", action="store_true", help=GRAY_HELP)
    r.add_argument("--tile", type=int, help=TILE_HELP)
    r.add_argument("--measurement", action="store_true", help="INPUT is a measurement y (e.g. a low-resolution image, a CASSI snapshot)")
    r.add_argument("--noise-sigma", type=float, default=0.0, help="std of the Gaussian noise added to the measurement "
                   "y, in image units (pixels in [0, 1]: 0.01 is 2.55/255; default 0, no noise); --seed fixes the draw")
    _common(r)

    m = sub.add_parser("measure", help="simulate a measurement of IMAGE with the model's operator (.npz records the sampling)")
    _model_options(m)
    m.add_argument("input", type=Path, help="an image (.png/.tif/.bmp/.jpg)")
    m.add_argument("output", type=Path, help="OUTPUT.npz (y and the sampling matrix's fingerprint; lorun restore --measurement "
                   "refuses it for a model of another sampling) or OUTPUT.npy (y only)")
    m.add_argument("--gray", action="store_true", help=GRAY_HELP)
    m.add_argument("--noise-sigma", type=float, default=0.0, help="std of the Gaussian noise added to the measurement "
                   "y, in image units (pixels in [0, 1]: 0.01 is 2.55/255; default 0, no noise); --seed fixes the draw")
    _common(m)

    x = sub.add_parser("export", help="write a model as one ONNX file for onnxruntime (adapters merged, the operator inside), "
                       "checked against PyTorch right after: pip install 'lorun_peft[onnx]'")
    _model_options(x)
    x.add_argument("output", type=Path, help="OUTPUT.onnx")
    x.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), help="the image size to check on (default 256 256); "
                   "sr and cassi files are fixed to it, block CS stays dynamic (any multiple of the block)")
    x.add_argument("--simulate", action="store_true", help="the file takes clean images and measures them itself (for testing)")
    x.add_argument("--atol", type=float, default=1e-4, help="fail if onnxruntime differs from PyTorch by more (max abs; default 1e-4)")
    x.add_argument("--opset", type=int, help="ONNX opset version (default: torch.onnx's)")
    x.add_argument("--mask", type=Path, help="cassi: export for this coded aperture (.mat key 'mask' or .npy), the system's full mask")
    x.add_argument("--int8", type=Path, metavar="DIR", help="also write an int8 copy (OUTPUT-int8.onnx, onnxruntime's static "
                   "quantization) calibrated on up to 16 images of DIR (training images, never test images)")
    _common(x)

    i = sub.add_parser("inspect", help="rank table and parameter report of a model or a configuration")
    _model_options(i, required=False, sources=False)  # --base, --subfolder, --revision: added with BUNDLE below
    i.add_argument("--export-sampling", type=Path, metavar="FILE", help="block CS: write the model's sampling patterns "
                   "(m x B x B) to FILE.npy or FILE.mat (with its fingerprint), e.g. for a single-pixel camera")
    _network_options(i)
    _common(i)

    p = sub.add_parser("plot", help="per-stage PSNR curve and the LoRA weight-update maps (paper Fig. 12)")
    _model_options(p)
    p.add_argument("--data", type=Path, help=f"test images for the PSNR curve: a folder or a test set's name ({TESTSET_NAMES}; "
                   "`lorun data list`); default built-in images")
    p.add_argument("--out", type=Path, help="folder for the figures (default: the model's folder; ./zoo-NAME/ for zoo:NAME)")
    p.add_argument("--layers", nargs="+", help="layers to show in lora_updates.png (default: the 4 most changed)")
    p.add_argument("--noise-sigma", type=float, default=0.0, help="std of the Gaussian noise added to every measurement "
                   "y, in image units (pixels in [0, 1]: 0.01 is 2.55/255; default 0, no noise); --seed fixes the draw")
    _common(p)

    c = sub.add_parser("convert", help="rewrite a model (an old single-file model.safetensors, a bundle + base, a Hub repo) with save_pretrained")
    _model_options(c)
    c.add_argument("out", type=Path, help="the folder to write")
    _common(c)

    d = sub.add_parser("demo", help="the pretrained zoo on a photograph (no training), then a task its base has never seen (inpainting) trained over it: plug-and-play, Block-1 and LoRun at equal steps")
    d.add_argument("--out", type=Path, default=Path("lorun_demo"), help="output folder (default lorun_demo)")
    d.add_argument("--missing", type=float, default=0.8, help="part 2: the share of pixels missing in the new task, inpainting (default 0.8)")
    d.add_argument("--K", type=int, default=9, help="number of stages (default 9)")
    d.add_argument("--gamma", type=float, default=10.0, help="LoRA rank rule percentage (default 10)")
    d.add_argument("--steps", type=int, default=60, help="part 2: training steps of each method (default 60)")
    d.add_argument("--quick", action="store_true", help="part 2 with 20 steps per method")
    d.add_argument("--data", type=Path, help="part 2 on your own image folder (the last fifth is held out for the test)")
    d.add_argument("--image", type=Path, help="a photograph for the zoo part, gray or colour (colour is restored R, G and B one by one; default: the shipped gray camera photograph, 256 x 256)")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    _common(d)
    a = sub.add_parser("app", help="a web page (Gradio) to try task bundles on photographs: pip install 'lorun_peft[app]'")
    a.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    a.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    a.add_argument("--allow-local", action="store_true", help="let the page load bundle and network folders typed into it")
    a.add_argument("--max-upload-mb", type=float, default=10.0, help="largest upload in MB (default 10)")
    a.add_argument("--max-side", type=int, default=1024, help="largest image side in pixels (default 1024)")
    a.add_argument("--open", action="store_true", help="open the page in a browser")
    a.add_argument("--threads", type=int, default=None, help="CPU threads for restoring (default: torch's choice)")
    _data_commands(sub)
    add_bundle_commands(sub)  # push, pull, and inspect BUNDLE
    return parser


def _data_commands(subparsers: Any) -> None:
    """``lorun data list`` and ``lorun data get NAME...`` (the test sets of :mod:`lorun_peft.data.testsets`)."""
    p = subparsers.add_parser("data", help="the standard test sets --data and --val take by name: list them, or download them ahead")
    actions = p.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="each known test set: its source (a Hub dataset or a data folder), cached or not, and where")
    g = actions.add_parser("get", help="download and extract test sets into the Hugging Face cache now (for use offline later)")
    g.add_argument("names", nargs="+", metavar="NAME", help=f"test set names ({TESTSET_NAMES})")
    g.add_argument("--refresh", action="store_true", help="download again and extract anew (e.g. after a damaged download)")
    g.add_argument("--endpoint", default=None, help="Hub URL (default: HF_ENDPOINT or huggingface.co)")


def add_bundle_commands(subparsers: Any) -> None:
    """Add ``push`` and ``pull`` to a ``parser.add_subparsers(dest="command")`` object, and a
    ``BUNDLE`` argument (+ ``--subfolder``, ``--revision``, ``--base``, ``--endpoint``) to its
    ``inspect`` command, which is added if the parser has none. Call it after the other commands.

    Tokens come from ``HF_TOKEN`` or ``hf auth login``, never from the command line.

    >>> parser = argparse.ArgumentParser(prog="lorun")
    >>> add_bundle_commands(parser.add_subparsers(dest="command"))
    >>> args = parser.parse_args(["pull", "user/repo", "--subfolder", "cs-0.10"])
    >>> args.command, args.subfolder
    ('pull', 'cs-0.10')
    """
    p = subparsers.add_parser("push", help="upload a saved task bundle or base folder to the Hugging Face Hub")
    p.add_argument("folder", type=Path, help="a folder written by net.save_adapters(), net.save_base() or net.save_pretrained(), "
                                             "a `lorun train --out` folder, or the zoo folder")
    p.add_argument("repo_id", help="Hub repo, e.g. user/lorun-cs (created if missing)")
    p.add_argument("--path-in-repo", default=None, help="folder inside the repo (default: the repo root)")
    p.add_argument("--revision", default=None, help="branch to commit to (created if missing; default main)")
    p.add_argument("--tag", default=None, help="tag the new commit")
    p.add_argument("--private", action="store_true", default=None, help="create the repo as private")
    p.add_argument("--message", default=None, help="commit message")
    p.add_argument("--endpoint", default=None, help="Hub URL (default: HF_ENDPOINT or huggingface.co)")

    p = subparsers.add_parser("pull", help="download one task bundle from the Hub into the cache (and optionally a folder)")
    p.add_argument("repo_id", help="Hub repo, e.g. user/lorun-cs")
    p.add_argument("--subfolder", default=None, help="the bundle's folder inside the repo")
    p.add_argument("--revision", default=None, help="branch, tag or commit (default main)")
    p.add_argument("--to", type=Path, default=None, help="also copy the bundle into this folder")
    p.add_argument("--endpoint", default=None, help="Hub URL (default: HF_ENDPOINT or huggingface.co)")

    p = subparsers.choices.get("inspect") or subparsers.add_parser("inspect", help="show a task bundle or list a repo's bundles")
    g = p.add_argument_group("task bundles (lorun inspect BUNDLE)")
    g.add_argument("bundle", nargs="?", default=None, help="a task bundle folder, a folder of bundles, or a Hub repo id")
    g.add_argument("--subfolder", default=None, help="the bundle's folder inside the repo or folder")
    g.add_argument("--revision", default=None, help="Hub branch, tag or commit")
    g.add_argument("--base", default=None, help="a saved base (folder or Hub repo) to check the fingerprint against; "
                                                "with --model: a task bundle's base ('zoo' or 'zoo:cs' for the zoo's)")
    g.add_argument("--endpoint", default=None, help="Hub URL (default: HF_ENDPOINT or huggingface.co)")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the command; returns the exit status (2 for a reported error)."""
    parser = build_parser()
    for failure in plugin_failures():  # the other tasks work; say once which plugin did not load
        print(f"lorun: warning: {failure}; its task is unavailable", file=sys.stderr)
    args = parser.parse_args(argv)
    if getattr(args, "threads", None) is not None and args.threads < 1:
        print(f"lorun {args.command}: error: --threads must be >= 1", file=sys.stderr)
        return 2
    try:
        import torch  # torch and the rest load here, after the arguments are known good

        threads_before = torch.get_num_threads()  # given back below: main() called from Python leaves them as they were
        if getattr(args, "threads", None):
            torch.set_num_threads(args.threads)
        elif hasattr(args, "threads"):  # a command with --threads, not given
            torch.set_num_threads(default_threads(args.command))
        if args.command == "app":
            from ..app.page import serve
            from ..app.playground import Limits

            serve(args.host, args.port, allow_local=args.allow_local, open_browser=args.open,
                  limits=Limits(max_upload_mb=args.max_upload_mb, max_side=args.max_side))
        elif args.command == "demo":
            from .demo import demo

            demo(args.out, missing=args.missing, K=args.K, gamma=args.gamma, steps=20 if args.quick else args.steps,
                 seed=args.seed, data=args.data, progress=not args.no_progress, image=args.image)
        else:
            from . import commands

            commands.run(args)
    except (LorunError, FileNotFoundError, ImportError) as err:
        print(f"lorun {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lorun {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into a reader that stopped (`lorun inspect | head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        if "torch" in sys.modules and "threads_before" in locals():
            sys.modules["torch"].set_num_threads(threads_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
