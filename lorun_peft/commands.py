"""What the ``lorun`` commands do, once :mod:`lorun_peft.cli` has parsed the arguments: build,
train, save and load networks (``save_model``/``load_model``), evaluate, restore, inspect, plot,
and the Hub commands (``push``, ``pull``, ``inspect BUNDLE``).

>>> from lorun_peft.cli import build_parser
>>> args = build_parser().parse_args(["inspect", "--task", "cs", "--K", "2", "--width", "4", "--depth", "1"])
>>> run(args)  # doctest: +ELLIPSIS
configuration: task cs, ...
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import bundle, zoo
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
from .errors import CorruptFileError, IncompatibleBundleError, InvalidArgumentError
from .io import atomic_write
from .operators import CASSI, BlockCS, BlurDownsample, operator_from_config
from .plots import line_chart, lora_norm_figure, lora_update_figure, save_png, to_display
from .pretrain import choose_noise_schedule
from .recipe import PAPER, RECIPE, train_two_phase
from .train import Evaluation, evaluate, fit_operator
from .unfold import UnfoldedNetwork, unfold

__all__ = ["run", "save_model", "load_model", "network_config", "build_network", "run_bundle_command", "is_bundle_command", "MODEL_FILE"]

MODEL_FILE = "model.safetensors"
FORMAT = "lorun-model"
_TASK_OF_OPERATOR = {"BlockCS": "cs", "BlurDownsample": "sr", "CASSI": "cassi"}


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
        return BlockCS(args.ratio, block=args.block, channels=channels, seed=args.seed, learnable=args.learn_matrix,
                       init="gaussian" if args.learn_matrix else "orthogonal", linear_estimate=args.linear_estimate)
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


def network_config(args: argparse.Namespace, operator: Any, share: str, denoiser: torch.nn.Module | None = None) -> dict[str, Any]:
    """The JSON configuration from which :func:`build_network` rebuilds the network (the
    denoiser's from ``args``, or that of a given built-in ``denoiser``)."""
    channels = _channels(args)
    options = {"in_channels": channels, "depth": args.depth}
    options["width" if args.denoiser == "unet" else "dim"] = args.width
    denoiser_config = denoiser.config() if denoiser is not None else build_denoiser(args.denoiser, **options).config()
    return {
        "format": FORMAT,
        "version": 1,
        "task": args.task,
        "channels": channels,
        "operator": operator.config(),
        "denoiser": {"name": args.denoiser, "config": denoiser_config},
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


def base_denoiser_name(base: torch.nn.Module) -> str:
    """The command line's name of a built-in denoiser class (``unet``, ...)."""
    name = next((n for n, cls in DENOISERS.items() if type(base) is cls), None)
    if name is None:
        raise InvalidArgumentError(f"the base is a {type(base).__name__}, not one of the built-in denoisers {sorted(DENOISERS)}")
    return name


def _pretrained_base(spec: str) -> torch.nn.Module:
    """``--base``: the zoo's base ("zoo") or a base folder written by ``save_base``."""
    return zoo.load_base() if spec == "zoo" else bundle.load_base(Path(spec))


def _whole_images(data: Any, limit: int = 400) -> list[torch.Tensor]:
    """Training images to fit the linear estimate on: a dataset's whole images, or the tensors."""
    if hasattr(data, "full"):
        return [data.full(i) for i in range(min(len(data), limit))]
    return list(data)[:limit]


def _zoo_model(name: str) -> tuple[UnfoldedNetwork, dict[str, Any]]:
    """A zoo bundle on the zoo's base, with the command line's configuration of it."""
    net = zoo.load(name)
    base = net.denoisers.model
    denoiser = base_denoiser_name(base)
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


def folder_images(config: dict[str, Any], folder: Path | list[Path]) -> tuple[list[torch.Tensor], list[str]]:
    """The images (or cubes) of a folder, or of a list of files, whole."""
    if config["task"] == "cassi":
        data: Any = SpectralCubes(folder, augment=False)
    else:
        data = ImageFolder(folder, channels=config["channels"], augment=False)
    return [data.full(i) for i in range(len(data))], data.names


def evaluation_images(config: dict[str, Any], operator: Any, folder: Path | list[Path] | None) -> tuple[list[torch.Tensor], list[str]]:
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
        return data, evaluation_images(config, operator, files[-held:])[0]
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
    phases = {"recipe": RECIPE, "paper": PAPER}.get(args.phase, (args.phase,))
    if args.phase == "adapters":
        if (args.init is None) == (args.base is None):
            raise InvalidArgumentError("--phase adapters needs either --init (a model to continue) or --base (a pretrained base denoiser)")
    elif args.init is not None or args.base is not None:
        raise InvalidArgumentError(f"--{'init' if args.init is not None else 'base'} is only for --phase adapters")
    if args.init is not None:
        net, config = load_model(args.init)
        if net.share not in ("base", "lora"):
            raise InvalidArgumentError(f"--init {args.init} holds a share={net.share!r} network; adapters need Block-1 or LoRun")
        args.task, args.channels = config["task"], config["channels"]
    else:
        base = _pretrained_base(args.base) if args.base is not None else None
        if base is not None:
            args.denoiser, args.channels = base_denoiser_name(base), base.config()["in_channels"]
        operator = make_operator(args)
        config = network_config(args, operator, "base", denoiser=base)
        net = build_network(config, operator)
        if base is not None:
            net.denoisers.denoiser.load_state_dict(base.state_dict())
    net.to(_device(args.device))
    training = {
        "phases": list(phases), "steps": args.steps, "adapter_steps": args.adapter_steps or args.steps,
        "lr": args.lr, "adapter_lr": args.adapter_lr or args.lr, "batch_size": args.batch_size,
        "noise_sigma": args.noise_sigma, "patch": args.patch, "seed": args.seed,
        "data": str(args.data) if args.data else "built-in", "val": str(args.val) if args.val else None,
    }
    if args.base is not None:
        training["base"] = args.base
    _record_settings(args.out / "checkpoints", {**config, "training": training}, fresh=args.fresh)
    data, val = training_data(args, config, net.operator)
    if args.init is None and getattr(net.operator, "q", None) is not None:
        net.operator.fit_initial_estimate(_whole_images(data))
        _say("initial estimate: the linear MMSE estimate x0 = Q y, Q fitted on the training images")
    if args.base is not None and val is not None:
        chosen = choose_noise_schedule(net, val)
        _say(f"steps set for the pretrained base on the validation images: sigma {chosen['sigma_first']} -> "
             f"{chosen['sigma_last']} ({chosen['psnr']:.2f} dB before training)")
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
        for phase, r in (("denoiser", result.denoiser), ("backbone", result.backbone), ("adapters", result.adapters))
        if r is not None
    }
    with atomic_write(args.out / "train_log.json") as f:
        f.write(json.dumps(log).encode())
    for phase, entry in log.items():
        val_text = f", validation PSNR {entry['val_psnr'][-1][1]:.2f} dB" if entry["val_psnr"] else ""
        val_text += " (Gaussian denoising, sigma 25/255)" if phase == "denoiser" and val_text else ""
        _say(f"{phase}: final loss {entry['losses'][-1]:.4g}{val_text}, {entry['seconds']:.0f} s")
        if phase == "denoiser" and result.schedule is not None:
            _say(f"steps set for the pretrained denoiser on the validation images: sigma {result.schedule['sigma_first']} "
                 f"-> {result.schedule['sigma_last']} ({result.schedule['psnr']:.2f} dB before the adapters)")
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
    default = Path(str(args.model).replace(":", "-")) if str(args.model).startswith(zoo.PREFIX) else (
        args.model if args.model.is_dir() else args.model.parent)
    folder = args.out or default  # a zoo model's figures go to ./zoo-NAME/
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


# ================================================================================ the Hub
def is_bundle_command(args: argparse.Namespace) -> bool:
    """Whether :func:`run_bundle_command` handles ``args`` (push, pull, or inspect with a BUNDLE)."""
    command = getattr(args, "command", None)
    return command in ("push", "pull") or (command == "inspect" and getattr(args, "bundle", None) is not None)



def run_bundle_command(args: argparse.Namespace) -> int:
    """Run a command added by :func:`add_bundle_commands`; raises LorunError subclasses on failure."""
    if not is_bundle_command(args):
        raise InvalidArgumentError(f"not a bundle command: {getattr(args, 'command', None)!r} (inspect needs a BUNDLE)")
    if args.command == "push":
        what = bundle.push_folder(
            args.folder, args.repo_id, path_in_repo=args.path_in_repo, revision=args.revision, tag=args.tag,
            private=args.private, commit_message=args.message, endpoint=args.endpoint,
        )
        print(f"pushed {args.folder} to {args.repo_id}/{args.path_in_repo or ''} ({getattr(what, 'commit_url', what)})")
    elif args.command == "pull":
        local = bundle.pull(args.repo_id, subfolder=args.subfolder, revision=args.revision, endpoint=args.endpoint)
        if args.to is not None:
            local = bundle.copy_bundle(local, args.to)
        print(bundle.inspect(local))
        print(f"\nbundle at {local}")
    else:
        print(bundle.inspect(args.bundle, subfolder=args.subfolder, revision=args.revision, base=args.base, endpoint=args.endpoint))
    sys.stdout.flush()
    return 0


# ==================================================================================== run
COMMANDS = {"train": cmd_train, "eval": cmd_eval, "restore": cmd_restore, "inspect": cmd_inspect, "plot": cmd_plot}


def run(args: argparse.Namespace) -> None:
    """Run the parsed command ``args``; raises LorunError subclasses (and FileNotFoundError) on failure."""
    if args.command == "push" and zoo.is_zoo(args.folder):  # the whole zoo folder, unchanged
        what = zoo.push(args.repo_id, args.folder, path_in_repo=args.path_in_repo, revision=args.revision, tag=args.tag,
                        private=args.private, commit_message=args.message, endpoint=args.endpoint)
        print(f"pushed the zoo {args.folder} to {args.repo_id}/{args.path_in_repo or ''} ({getattr(what, 'commit_url', what)})")
    elif is_bundle_command(args):
        run_bundle_command(args)
    else:
        COMMANDS[args.command](args)
