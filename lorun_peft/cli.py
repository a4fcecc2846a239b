"""The ``lorun`` command line: train, eval, restore, inspect, plot and demo.

``lorun demo`` runs the paper's two-phase training on built-in images in about two minutes on
a CPU. ``lorun train --out DIR`` writes ``DIR/model.safetensors`` (the network's state_dict with
its configuration in the file's metadata, so one file rebuilds the network), a readable
``DIR/config.json``, ``DIR/train_log.json`` and resumable checkpoints under ``DIR/checkpoints``;
``eval``, ``restore``, ``inspect`` and ``plot`` take ``--model DIR`` or a bundle of the shipped
zoo, ``--model zoo:cs-0.25`` (no training, no network). Errors (bad arguments,
missing or unreadable files) print one line on stderr and exit with status 2.

>>> parser = build_parser()
>>> parser.parse_args(["demo", "--steps", "5"]).steps
5
>>> parser.parse_args(["train", "--task", "sr", "--scale", "2", "--out", "run"]).scale
2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .data import (
    CUBE_SUFFIXES,
    IMAGE_SUFFIXES,
    ImageFolder,
    SpectralCubes,
    center_crop,
    image_channels,
    list_files,
    load_cube,
    load_image,
    modcrop,
    random_mask_crop,
    synthetic_cubes,
    synthetic_images,
)
from .denoisers import DENOISERS, build_denoiser
from .hub import add_bundle_commands, is_bundle_command, run_bundle_command
from .errors import CorruptFileError, IncompatibleBundleError, InvalidArgumentError, LorunError
from .io import atomic_write
from .metrics import MetricTable, psnr, ssim
from .operators import CASSI, BlockCS, BlurDownsample, operator_from_config
from .plots import image_grid, line_chart, lora_norm_figure, lora_update_figure, save_png, to_display
from .train import Evaluation, evaluate, fit_operator, train_two_phase
from .unfold import UnfoldedNetwork, unfold
from . import zoo

__all__ = ["main", "build_parser", "demo", "save_model", "load_model", "MODEL_FILE"]

MODEL_FILE = "model.safetensors"
FORMAT = "lorun-model"
TASKS = ("cs", "sr", "cassi")
MODEL_HELP = "a `lorun train --out` folder, its model.safetensors, or a shipped zoo bundle: zoo:cs-0.25 (see `lorun_peft.zoo.list()`)"
_TASK_OF_OPERATOR = {"BlockCS": "cs", "BlurDownsample": "sr", "CASSI": "cassi"}


# =============================================================================== the parser
def _network_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("network")
    g.add_argument("--task", choices=TASKS, default="cs", help="cs: block compressive sensing; sr: blur + downsampling; cassi: spectral snapshot")
    g.add_argument("--ratio", type=float, default=0.25, help="cs: sampling ratio in (0, 1] (default 0.25)")
    g.add_argument("--block", type=int, default=32, help="cs: block size in pixels (default 32)")
    g.add_argument("--scale", type=int, default=4, help="sr: downsampling factor (default 4)")
    g.add_argument("--kernel", type=int, default=0, help="sr: kernel index, 0-11 of the built-in bank or of --kernel-file (default 0)")
    g.add_argument("--kernel-file", type=Path, help="sr: kernels from a .mat/.npy/.png file (e.g. USRNet's kernels_12.mat)")
    g.add_argument("--mask", type=Path, help="cassi: coded aperture, .mat (key 'mask') or .npy; default a random binary mask")
    g.add_argument("--bands", type=int, default=28, help="cassi: spectral bands (default 28)")
    g.add_argument("--dispersion", type=int, default=2, help="cassi: shift per band in pixels (default 2)")
    g.add_argument("--channels", type=int, choices=(1, 3), help="image channels: 1 gray, 3 RGB (default: what --data holds, 3 if any image is colour; on built-in images 1 for cs, 3 for sr)")
    g.add_argument("--denoiser", choices=sorted(DENOISERS), default="unet", help="reference denoiser (default unet)")
    g.add_argument("--width", type=int, default=16, help="denoiser width (U-Net channels / Transformer dim; default 16)")
    g.add_argument("--depth", type=int, default=2, help="denoiser depth (default 2)")
    g.add_argument("--K", type=int, default=9, help="number of stages (default 9)")
    g.add_argument("--gamma", type=float, help="LoRA rank rule percentage (default 10)")
    g.add_argument("--algorithm", choices=("pgd", "hqs"), default="pgd", help="data step (default pgd)")
    g.add_argument("--adapter", choices=("lora", "dora", "loha", "lokr"), default="lora", help="PEFT adapter kind (default lora)")
    g.add_argument("--patch", type=int, default=64, help="training patch size; cassi: also the mask size (default 64)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1: fastest for small tensors on a shared CPU)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default auto: cuda when available)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lorun", description="Deep LoRA-unfolding networks on PEFT.")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train Block-1, then LoRun (Algorithm 1), on a folder or built-in images")
    _network_options(t)
    g = t.add_argument_group("training")
    g.add_argument("--data", type=Path, help="folder of training images (.npy/.mat cubes for cassi); default built-in images")
    g.add_argument("--val", type=Path, help="folder of validation images (whole images); default built-in images when --data is not given")
    g.add_argument("--phase", choices=("both", "backbone", "adapters"), default="both", help="default both")
    g.add_argument("--init", type=Path, help="with --phase adapters: the --out folder of a `--phase backbone` run")
    g.add_argument("--steps", type=int, default=1000, help="training steps per phase (default 1000)")
    g.add_argument("--adapter-steps", type=int, help="steps of the adapter phase (default --steps)")
    g.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    g.add_argument("--adapter-lr", type=float, help="learning rate of the adapter phase (default --lr)")
    g.add_argument("--batch-size", type=int, default=8, help="per process (default 8)")
    g.add_argument("--noise-sigma", type=float, default=0.0, help="measurement noise std (default 0)")
    g.add_argument("--val-every", type=int, default=0, help="validate every N steps (default: at the end of each phase)")
    g.add_argument("--checkpoint-every", type=int, default=100, help="checkpoint every N steps (default 100)")
    g.add_argument("--fresh", action="store_true", help="ignore checkpoints in --out and start over")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--out", type=Path, required=True, help="output folder (model.safetensors, config.json, bundle/ with the adapters, checkpoints/)")
    _common(t)

    e = sub.add_parser("eval", help="PSNR / SSIM per image and mean, as a table and optionally CSV / JSON")
    e.add_argument("--model", "--bundle", dest="model", type=Path, required=True, help=MODEL_HELP)
    e.add_argument("--data", type=Path, help="folder of test images (default built-in images)")
    e.add_argument("--noise-sigma", type=float, default=0.0)
    e.add_argument("--y-channel", action=argparse.BooleanOptionalAction, help="measure RGB on the luma channel (default: on for sr)")
    e.add_argument("--border", type=int, help="pixels shaved before measuring (default: the scale for sr, else 0)")
    e.add_argument("--csv", type=Path, help="also write the table as CSV")
    e.add_argument("--json", type=Path, help="also write the table as JSON")
    _common(e)

    r = sub.add_parser("restore", help="degrade INPUT with the model's operator and restore it, or restore a measurement")
    r.add_argument("--model", "--bundle", dest="model", type=Path, required=True, help=MODEL_HELP)
    r.add_argument("input", type=Path, help="an image (.png/.tif/.bmp/.jpg), a cube (.npy/.mat), or with --measurement a measurement")
    r.add_argument("output", type=Path, help="OUTPUT.png (or .npy for the raw array)")
    r.add_argument("--measurement", action="store_true", help="INPUT is a measurement y (e.g. a low-resolution image, a CASSI snapshot)")
    r.add_argument("--noise-sigma", type=float, default=0.0)
    _common(r)

    i = sub.add_parser("inspect", help="rank table and parameter report of a model or a configuration")
    i.add_argument("--model", "--bundle", dest="model", type=Path, help="a trained model; without it the network options describe one")
    _network_options(i)
    _common(i)

    p = sub.add_parser("plot", help="per-stage PSNR curve and the LoRA weight-update maps (paper Fig. 12)")
    p.add_argument("--model", "--bundle", dest="model", type=Path, required=True, help=MODEL_HELP)
    p.add_argument("--data", type=Path, help="test images for the PSNR curve (default built-in images)")
    p.add_argument("--out", type=Path, help="folder for the figures (default: the model's folder)")
    p.add_argument("--layers", nargs="+", help="layers to show in lora_updates.png (default: the 4 most changed)")
    p.add_argument("--noise-sigma", type=float, default=0.0)
    _common(p)

    d = sub.add_parser("demo", help="two-phase training (Block-1, then LoRun) on built-in images, CS at one ratio")
    d.add_argument("--out", type=Path, default=Path("lorun_demo"), help="output folder (default lorun_demo)")
    d.add_argument("--ratio", type=float, default=0.25, help="CS sampling ratio (default 0.25)")
    d.add_argument("--K", type=int, default=9, help="number of stages (default 9)")
    d.add_argument("--gamma", type=float, default=10.0, help="LoRA rank rule percentage (default 10)")
    d.add_argument("--steps", type=int, default=200, help="training steps per phase (default 200)")
    d.add_argument("--quick", action="store_true", help="60 steps per phase (under a minute)")
    d.add_argument("--data", type=Path, help="train on your own image folder (the last fifth is held out for the test)")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    _common(d)
    add_bundle_commands(sub)  # push, pull, and inspect BUNDLE
    return parser


# ========================================================================== building networks
def _is_main() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _say(*args: Any) -> None:
    if _is_main():
        print(*args, flush=True)


def _channels(args: argparse.Namespace) -> int:
    """CASSI: the bands; else --channels, or what the training images hold (3 if any is colour),
    or 1 for cs and 3 for sr on built-in images."""
    if args.task == "cassi":
        return args.bands
    if args.channels:
        return args.channels
    data = getattr(args, "data", None)
    if data is not None and Path(data).is_dir():
        return max((image_channels(f) for f in list_files(data, IMAGE_SUFFIXES)), default=1)
    return 3 if args.task == "sr" else 1


def make_operator(args: argparse.Namespace) -> torch.nn.Module:
    """The task's operator from the command-line options."""
    channels = _channels(args)
    if args.task == "cs":
        return BlockCS(args.ratio, block=args.block, channels=channels, seed=args.seed)
    if args.task == "sr":
        from .kernels import kernel_bank, load_kernels

        bank = load_kernels(args.kernel_file) if args.kernel_file else kernel_bank()
        if not 0 <= args.kernel < len(bank):
            raise InvalidArgumentError(f"--kernel must be in 0..{len(bank) - 1}, got {args.kernel}")
        if args.patch % args.scale:
            raise InvalidArgumentError(f"--patch {args.patch} must be a multiple of --scale {args.scale}")
        return BlurDownsample(bank[args.kernel], scale=args.scale, channels=channels)
    if args.mask is not None:
        mask = _read_mask(args.mask)
        if mask.shape[0] > args.patch or mask.shape[1] > args.patch:  # train on a random crop, as TSA-Net
            mask = random_mask_crop(mask, args.patch, torch.Generator().manual_seed(args.seed))
    else:
        mask = (torch.rand(args.patch, args.patch, generator=torch.Generator().manual_seed(args.seed)) > 0.5).float()
    return CASSI(mask, step=args.dispersion, bands=args.bands)


def _read_mask(path: Path) -> torch.Tensor:
    if path.suffix.lower() == ".mat":
        from .operators.cassi import load_mask

        return load_mask(path)
    if not path.is_file():
        raise FileNotFoundError(f"mask file not found: {path}")
    try:
        mask = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise CorruptFileError(f"mask {path} is not a readable .npy file: {err}") from err
    if mask.ndim != 2:
        raise CorruptFileError(f"mask {path} must be a 2-D array, got shape {mask.shape}")
    return torch.from_numpy(mask.astype(np.float32))


def network_config(args: argparse.Namespace, operator: Any, share: str) -> dict[str, Any]:
    """The JSON configuration from which :func:`build_network` rebuilds the network."""
    channels = _channels(args)
    options = {"in_channels": channels, "depth": args.depth}
    options["width" if args.denoiser == "unet" else "dim"] = args.width
    return {
        "format": FORMAT,
        "version": 1,
        "task": args.task,
        "channels": channels,
        "operator": operator.config(),
        "denoiser": {"name": args.denoiser, "config": build_denoiser(args.denoiser, **options).config()},
        "unfold": {
            "K": args.K,
            "algorithm": args.algorithm,
            "gamma": 10.0 if args.gamma is None else args.gamma,
            "share": share,
            "adapter": args.adapter,
            "noise_level": True,
        },
    }


def build_network(config: dict[str, Any], operator: Any = None) -> UnfoldedNetwork:
    """An (untrained) network from a configuration written by :func:`network_config`."""
    try:
        denoiser = build_denoiser(config["denoiser"]["name"], **config["denoiser"]["config"])
        operator = operator if operator is not None else operator_from_config(config["operator"])
        return unfold(denoiser, operator, **config["unfold"])
    except (KeyError, TypeError) as err:
        raise IncompatibleBundleError(f"the model configuration is incomplete or has unknown fields: {err!r}") from err


def save_model(folder: Path, net: UnfoldedNetwork, config: dict[str, Any]) -> Path:
    """Write ``folder/model.safetensors`` (state_dict + config in its metadata, the file that
    counts) and a readable copy of the config as ``config.json``; each file atomically."""
    from safetensors.torch import save

    config = {**config, "unfold": {**config["unfold"], "share": net.share, "gamma": net.gamma}}
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in net.state_dict().items()}
    blob = save(tensors, metadata={"lorun": json.dumps(config)})
    path = folder / MODEL_FILE
    with atomic_write(path) as f:
        f.write(blob)
    with atomic_write(folder / "config.json") as f:
        f.write(json.dumps(config, indent=2).encode())
    if net.share == "lora" and hasattr(net.operator, "config"):
        net.save_adapters(folder / "bundle")  # the task's adapters alone, for `lorun push` and load_adapters
    return path


def _zoo_model(name: str) -> tuple[UnfoldedNetwork, dict[str, Any]]:
    """A zoo bundle on the zoo's base, with the command line's configuration of it."""
    net = zoo.load(name)
    base = net.denoisers.model
    denoiser = next((n for n, cls in DENOISERS.items() if type(base) is cls), type(base).__name__)
    operator = net.operator
    config = {
        "format": FORMAT, "version": 1, "task": _TASK_OF_OPERATOR.get(type(operator).__name__, "cs"),
        "channels": getattr(operator, "channels", 1), "operator": operator.config(),
        "denoiser": {"name": denoiser, "config": dict(getattr(base, "config", {}))},
        "unfold": {"K": net.K, "algorithm": net.algorithm, "gamma": net.gamma, "share": net.share,
                   "adapter": net.adapter, "noise_level": net.noise_level},
    }
    return net, config


def load_model(path: Path, device: str | torch.device = "cpu") -> tuple[UnfoldedNetwork, dict[str, Any]]:
    """Rebuild a network saved by :func:`save_model` (``path``: the folder or the file), or a zoo
    bundle (``zoo:cs-0.25``)."""
    from safetensors import SafetensorError, safe_open

    if str(path).startswith(zoo.PREFIX):
        net, config = _zoo_model(str(path))
        return net.to(device).eval(), config
    file = path / MODEL_FILE if path.is_dir() else path
    if not file.is_file():
        where = f"{path} has no {MODEL_FILE}" if path.is_dir() else f"model not found: {path}"
        raise FileNotFoundError(f"{where} (train one with `lorun train --out DIR`)")
    try:
        with safe_open(str(file), framework="pt") as f:
            config = json.loads((f.metadata() or {})["lorun"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no items()
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as err:
        raise CorruptFileError(f"{file} is not a lorun model file: {err!r}") from err
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise IncompatibleBundleError(f"{file} has format {found!r}, expected {FORMAT!r}")
    net = build_network(config)
    expected = net.state_dict()
    differ = sorted(set(tensors) ^ set(expected)) or [k for k in expected if tensors[k].shape != expected[k].shape]
    if differ:
        raise IncompatibleBundleError(f"{file} does not fit the network its configuration builds (differs at {differ[:3]})")
    net.load_state_dict(tensors)
    return net.to(device).eval(), config


# ============================================================================ data helpers
def fit_images(config: dict[str, Any], operator: Any, images: list[torch.Tensor]) -> list[torch.Tensor]:
    """Make whole images fit the task's operator: SR crops to multiples of the scale, CASSI to
    the mask's centre-sized window."""
    if config["task"] == "sr":
        return [modcrop(x, operator.scale) for x in images]
    if config["task"] == "cassi":
        return [center_crop(x, operator.height, operator.width) for x in images]
    return images


def builtin_eval_images(config: dict[str, Any], operator: Any, seed: int = 1000) -> tuple[list[torch.Tensor], list[str]]:
    """Held-out built-in images (other seeds than training): 4 images of 64 x 64, or 2 cubes."""
    if config["task"] == "cassi":
        cubes = synthetic_cubes(2, operator.height, config["channels"], seed=seed)
        return list(cubes), [f"cube_{i}" for i in range(len(cubes))]
    images = synthetic_images(4, 64, seed=seed, channels=config["channels"])
    return list(images), [f"synthetic_{i}" for i in range(len(images))]


def folder_images(config: dict[str, Any], folder: Path) -> tuple[list[torch.Tensor], list[str]]:
    if config["task"] == "cassi":
        data: Any = SpectralCubes(folder, augment=False)
    else:
        data = ImageFolder(folder, channels=config["channels"], augment=False)
    return [data.full(i) for i in range(len(data))], data.names


def evaluation_images(config: dict[str, Any], operator: Any, folder: Path | None) -> tuple[list[torch.Tensor], list[str]]:
    images, names = folder_images(config, folder) if folder else builtin_eval_images(config, operator)
    fitted = []
    for x, name in zip(images, names):
        try:
            fitted.append(fit_images(config, operator, [x])[0])
        except InvalidArgumentError as err:
            raise InvalidArgumentError(f"{name} does not fit the model's operator: {err}") from err
    return fitted, names


def training_data(args: argparse.Namespace, config: dict[str, Any], operator: Any) -> tuple[Any, Any]:
    """(training data, validation images) for ``lorun train``. With ``--data`` and no ``--val`` a
    few images of the folder (the last tenth, 1 to 4) are held out to validate on."""
    size = operator.height if config["task"] == "cassi" else args.patch
    if args.data is not None:
        cassi = config["task"] == "cassi"
        files = list_files(args.data, CUBE_SUFFIXES if cassi else IMAGE_SUFFIXES)
        held = 0 if args.val or len(files) < 2 else min(4, max(1, len(files) // 10))
        training = files[: len(files) - held]
        if cassi:
            data: Any = SpectralCubes(training, patch_size=size)
            if data.bands != config["channels"]:
                raise InvalidArgumentError(f"the cubes in {args.data} have {data.bands} bands, the model {config['channels']}")
        else:
            data = ImageFolder(training, patch_size=size, channels=config["channels"])
        if args.val:
            return data, evaluation_images(config, operator, args.val)[0]
        if not held:
            return data, None
        _say(f"validating on {held} image(s) held out of {args.data}: {', '.join(p.name for p in files[-held:])} (or give --val DIR)")
        holdout = SpectralCubes(files[-held:], augment=False) if cassi else ImageFolder(files[-held:], channels=config["channels"], augment=False)
        return data, [fit_images(config, operator, [holdout.full(i)])[0] for i in range(len(holdout))]
    if config["task"] == "cassi":
        data = synthetic_cubes(32, size, config["channels"], seed=args.seed)
    else:
        data = synthetic_images(128, size, seed=args.seed, channels=config["channels"])
    return data, evaluation_images(config, operator, args.val)[0]


def _metric_options(config: dict[str, Any], operator: Any, args: argparse.Namespace) -> dict[str, Any]:
    sr = config["task"] == "sr"
    y_channel = args.y_channel if getattr(args, "y_channel", None) is not None else sr
    border = args.border if getattr(args, "border", None) is not None else (operator.scale if sr else 0)
    return {"y_channel": y_channel, "border": border}


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise InvalidArgumentError(f"--device {name!r} is not a device: {err}") from err


# ================================================================================ commands
def cmd_train(args: argparse.Namespace) -> None:
    for name in ("steps", "batch_size", "patch", "K"):
        if getattr(args, name) < 1:
            raise InvalidArgumentError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    phases = ("backbone", "adapters") if args.phase == "both" else (args.phase,)
    if args.phase == "adapters":
        if args.init is None:
            raise InvalidArgumentError("--phase adapters needs --init DIR, the --out folder of a `lorun train --phase backbone` run")
        net, config = load_model(args.init)
        if net.share not in ("base", "lora"):
            raise InvalidArgumentError(f"--init {args.init} holds a share={net.share!r} network; adapters need Block-1 or LoRun")
        args.task, args.channels = config["task"], config["channels"]
    else:
        if args.init is not None:
            raise InvalidArgumentError("--init is only for --phase adapters")
        operator = make_operator(args)
        config = network_config(args, operator, "base")
        net = build_network(config, operator)
    net.to(_device(args.device))
    training = {
        "phases": list(phases), "steps": args.steps, "adapter_steps": args.adapter_steps or args.steps,
        "lr": args.lr, "adapter_lr": args.adapter_lr or args.lr, "batch_size": args.batch_size,
        "noise_sigma": args.noise_sigma, "patch": args.patch, "seed": args.seed,
        "data": str(args.data) if args.data else "built-in", "val": str(args.val) if args.val else None,
    }
    _record_settings(args.out / "checkpoints", {**config, "training": training}, fresh=args.fresh)
    data, val = training_data(args, config, net.operator)
    _say(f"lorun train: task {config['task']}, phases {', '.join(phases)}, {args.steps} steps each, output {args.out}")
    result = train_two_phase(
        net, data, steps=args.steps, adapter_steps=args.adapter_steps, lr=args.lr, adapter_lr=args.adapter_lr,
        gamma=args.gamma, phases=phases, checkpoint_dir=args.out / "checkpoints", seed=args.seed,
        batch_size=args.batch_size, noise_sigma=args.noise_sigma, val_data=val, val_every=args.val_every,
        checkpoint_every=args.checkpoint_every, resume=not args.fresh, progress=not args.no_progress,
    )
    if not _is_main():
        return
    config["training"] = training
    path = save_model(args.out, net, config)
    log = {
        phase: {"losses": r.losses, "val_psnr": r.val_psnr, "seconds": r.seconds}
        for phase, r in (("backbone", result.backbone), ("adapters", result.adapters)) if r is not None
    }
    with atomic_write(args.out / "train_log.json") as f:
        f.write(json.dumps(log).encode())
    for phase, entry in log.items():
        val_text = f", validation PSNR {entry['val_psnr'][-1][1]:.2f} dB" if entry["val_psnr"] else ""
        _say(f"{phase}: final loss {entry['losses'][-1]:.4g}{val_text}, {entry['seconds']:.0f} s")
    _say(str(net.parameter_report()))
    _say(f"model: {path}")


SETTINGS_FILE = "settings.json"


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flatten(item, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): value}


def _record_settings(folder: Path, settings: dict[str, Any], fresh: bool) -> None:
    """Resume only a run with exactly these settings: compare them with the ones recorded when the
    checkpoints in ``folder`` were started, and refuse naming each difference; record them for a new
    run (or with ``fresh``, after removing the old checkpoints)."""
    record = folder / SETTINGS_FILE
    settings = json.loads(json.dumps(settings))  # the JSON form, as it is recorded
    if fresh and folder.is_dir():
        for old in folder.rglob("*"):
            if old.is_file():
                old.unlink()
    elif record.is_file():
        try:
            before = json.loads(record.read_text())
        except (OSError, ValueError) as err:
            raise CorruptFileError(f"{record} cannot be read ({err}); start over with --fresh") from err
        old, new = _flatten(before), _flatten(settings)
        differ = [f"{key}: recorded {old.get(key)!r}, now {new.get(key)!r}" for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]
        if differ:
            raise InvalidArgumentError(
                f"{folder.parent} holds a run started with other settings ({'; '.join(differ)}); rerun with the "
                "recorded settings to resume it, or add --fresh to start over"
            )
        return
    elif folder.is_dir() and any(folder.rglob("*.pt")):
        raise InvalidArgumentError(f"{folder} holds checkpoints without recorded settings (an older lorun); add --fresh to start over")
    with atomic_write(record) as f:
        f.write(json.dumps(settings, indent=2).encode())


def _evaluate_model(net: UnfoldedNetwork, config: dict[str, Any], args: argparse.Namespace, **extra: Any) -> Evaluation:
    images, names = evaluation_images(config, net.operator, args.data)
    return evaluate(net, images, names=names, noise_sigma=args.noise_sigma, seed=args.seed,
                    **_metric_options(config, net.operator, args), **extra)


def cmd_eval(args: argparse.Namespace) -> None:
    net, config = load_model(args.model, _device(args.device))
    result = _evaluate_model(net, config, args)
    options = _metric_options(config, net.operator, args)
    where = "Y channel, " if options["y_channel"] and config["channels"] == 3 else ""
    print(f"{config['task']} model {args.model}; {where}border {options['border']}; x0 = the operator's initial estimate")
    print(result.table)
    for path, text in ((args.csv, result.table.to_csv()), (args.json, result.table.to_json())):
        if path is not None:
            with atomic_write(path) as f:
                f.write(text.encode())
            print(f"wrote {path}")


def _read_measurement(path: Path, config: dict[str, Any]) -> torch.Tensor:
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return load_image(path, config["channels"] if config["task"] == "sr" else 1)[None]
    if path.suffix.lower() not in (".npy", ".mat"):
        raise InvalidArgumentError(f"measurement {path} must be an image, .npy or .mat file")
    if not path.is_file():
        raise FileNotFoundError(f"measurement file not found: {path}")
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise CorruptFileError(f"measurement {path} is not a readable .npy file: {err}") from err
    else:
        from scipy.io import loadmat

        try:
            contents = {k: v for k, v in loadmat(str(path)).items() if not k.startswith("__")}
        except Exception as err:  # noqa: BLE001 - scipy raises many types on damaged files
            raise CorruptFileError(f"measurement {path} is not a readable .mat file: {err}") from err
        key = next((k for k in ("meas_real", "meas", "y") if k in contents), next(iter(contents)) if len(contents) == 1 else None)
        if key is None:
            raise CorruptFileError(f"measurement {path} has none of 'meas_real', 'meas', 'y' (it has {sorted(contents)})")
        array = np.asarray(contents[key])
    if array.dtype.kind not in "biuf" or not 2 <= array.ndim <= 4:
        raise CorruptFileError(f"measurement {path} must be a 2-D to 4-D numeric array, got {array.shape} {array.dtype}")
    y = torch.from_numpy(array.astype(np.float32))
    while y.dim() < 4:
        y = y[None]
    return y


def _write_output(path: Path, x: torch.Tensor) -> None:
    if path.suffix.lower() == ".npy":
        with atomic_write(path) as f:
            np.save(f, x.detach().cpu().numpy())
        return
    if path.suffix.lower() != ".png":
        raise InvalidArgumentError(f"OUTPUT must end in .png or .npy, got {path}")
    from PIL import Image

    save_png(path, Image.fromarray(to_display(x)))


def _as_input(x: torch.Tensor, path: Path, config: dict[str, Any]) -> torch.Tensor:
    """A gray input image restored by a colour model (its channels replicated) comes back gray."""
    gray_in = path.suffix.lower() in IMAGE_SUFFIXES and config["task"] != "cassi" and image_channels(path) == 1
    return x.mean(dim=0, keepdim=True) if gray_in and x.shape[0] == 3 else x


@torch.no_grad()
def cmd_restore(args: argparse.Namespace) -> None:
    if args.output.suffix.lower() not in (".png", ".npy"):
        raise InvalidArgumentError(f"OUTPUT must end in .png or .npy, got {args.output}")
    net, config = load_model(args.model, _device(args.device))
    reference = next(net.parameters())
    operator = net.operator
    if args.measurement:
        y = _read_measurement(args.input, config).to(reference)
        size = getattr(operator, "image_size", None)
        if isinstance(operator, BlockCS):
            size = (y.shape[-2] * operator.block, y.shape[-1] * operator.block)
        with fit_operator(operator, size) if size else contextlib.nullcontext():
            try:
                x_hat = net(y).clamp(0, 1)
            except InvalidArgumentError as err:
                raise InvalidArgumentError(f"measurement {args.input} does not fit the model: {err}") from err
        _write_output(args.output, _as_input(x_hat[0], args.input, config))
        print(f"restored {args.input} ({tuple(y.shape[1:])}) -> {args.output} ({tuple(x_hat.shape[1:])})")
        return
    if config["task"] == "cassi":
        x = load_cube(args.input) if args.input.suffix.lower() in (".npy", ".mat") else None
        if x is None:
            raise InvalidArgumentError(f"a cassi model restores cubes (.npy/.mat); {args.input} is not one (use --measurement for a snapshot)")
    else:
        x = load_image(args.input, config["channels"])
    x = fit_images(config, operator, [x])[0].to(reference)[None]
    result = evaluate(net, x, names=[args.input.name], noise_sigma=args.noise_sigma, seed=args.seed,
                      keep_outputs=True, **_metric_options(config, operator, args))
    _write_output(args.output, _as_input(result.restored[0], args.input, config))
    row = result.table.rows[0][1]
    print(f"{args.input} -> {args.output}: PSNR {row['psnr']:.2f} dB, SSIM {row['ssim']:.4f} "
          f"(initial estimate {row['x0_psnr']:.2f} dB)")


def cmd_inspect(args: argparse.Namespace) -> None:
    if args.model is not None:
        net, config = load_model(args.model)
        print(f"model {args.model}: task {config['task']}, operator {config['operator']['type']}, "
              f"denoiser {config['denoiser']['name']}, {json.dumps(config['unfold'])}")
    else:
        operator = make_operator(args)
        config = network_config(args, operator, "lora")
        net = build_network(config, operator)
        print(f"configuration: task {args.task}, {operator!r}".replace("\n", " "))
    print(net.rank_table())
    print()
    report = net.parameter_report()
    print(report)


def cmd_plot(args: argparse.Namespace) -> None:
    net, config = load_model(args.model, _device(args.device))
    folder = args.out or (args.model if args.model.is_dir() else args.model.parent)
    result = _evaluate_model(net, config, args)
    curve = folder / "stage_psnr.png"
    name = f"{'LoRun' if net.share == 'lora' else {'base': 'Block-1', 'none': 'Block-K'}[net.share]}-{net.K}"
    line_chart(curve, {name: result.stage_psnr}, title="PSNR after each stage", xlabel="stage", ylabel="PSNR (dB)")
    print(f"wrote {curve}: " + ", ".join(f"{v:.2f}" for v in result.stage_psnr))
    if net.share == "lora":
        updates, norms = folder / "lora_updates.png", folder / "lora_norms.png"
        shown = lora_update_figure(updates, net, layers=args.layers)
        lora_norm_figure(norms, net)
        print(f"wrote {updates} (|delta W| per stage of {', '.join(shown)})")
        print(f"wrote {norms} (||delta W|| / ||W0|| per stage and layer)")
    else:
        print("no LoRA updates to draw: the model has no adapters")


# ==================================================================================== demo
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


# ==================================================================================== main
COMMANDS = {"train": cmd_train, "eval": cmd_eval, "restore": cmd_restore, "inspect": cmd_inspect, "plot": cmd_plot}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "threads", None):
        if args.threads < 1:
            print(f"lorun {args.command}: error: --threads must be >= 1", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
    try:
        if args.command == "push" and zoo.is_zoo(args.folder):  # the whole zoo folder, unchanged
            zoo.push(args.repo_id, args.folder, path_in_repo=args.path_in_repo, revision=args.revision, tag=args.tag,
                     private=args.private, commit_message=args.message, endpoint=args.endpoint)
        elif is_bundle_command(args):
            run_bundle_command(args)
        elif args.command == "demo":
            demo(args.out, ratio=args.ratio, K=args.K, gamma=args.gamma, steps=60 if args.quick else args.steps,
                 seed=args.seed, data=args.data, progress=not args.no_progress)
        else:
            COMMANDS[args.command](args)
    except (LorunError, FileNotFoundError, ImportError) as err:
        print(f"lorun {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lorun {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into a reader that stopped (`lorun inspect | head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
