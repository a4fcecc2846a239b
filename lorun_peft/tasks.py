"""The data side of the ``lorun`` commands: the task's operator from the command-line options,
the training, validation and evaluation images fitted to it, and the files ``restore`` reads and
writes.

>>> import torch
>>> from lorun_peft.cli import build_parser
>>> operator = make_operator(build_parser().parse_args(["inspect", "--task", "sr", "--scale", "2"]))
>>> fit_images({"task": "sr"}, operator, [torch.rand(3, 33, 34)])[0].shape
torch.Size([3, 32, 34])
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

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
    load_image,
    modcrop,
    random_mask_crop,
    synthetic_cubes,
    synthetic_images,
)
from .errors import CorruptFileError, InvalidArgumentError
from .io import atomic_write
from .operators import CASSI, BlockCS, BlurDownsample
from .plots import save_png, to_display

__all__ = [
    "is_main", "say", "task_channels", "make_operator", "whole_images", "fit_images", "builtin_eval_images",
    "folder_images", "evaluation_images", "training_data", "metric_options", "read_measurement", "write_output",
    "as_input",
]


# ============================================================================== messages
def is_main() -> bool:
    """Whether this is the main process (RANK 0, or no launcher): the one that prints and saves."""
    return os.environ.get("RANK", "0") == "0"


def say(*args: Any) -> None:
    """Print on the main process only, flushed."""
    if is_main():
        print(*args, flush=True)


# ============================================================================ operators
def task_channels(args: argparse.Namespace) -> int:
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
    channels = task_channels(args)
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


# =============================================================================== images
def whole_images(data: Any, limit: int = 400) -> list[torch.Tensor]:
    """Training images to fit the linear estimate on: a dataset's whole images, or the tensors."""
    if hasattr(data, "full"):
        return [data.full(i) for i in range(min(len(data), limit))]
    return list(data)[:limit]


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
    """(images, names) to evaluate on, fitted to the operator: a folder's or the built-in ones."""
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
        say(f"validating on {held} image(s) held out of {args.data}: {', '.join(p.name for p in files[-held:])} (or give --val DIR)")
        return data, evaluation_images(config, operator, files[-held:])[0]
    if config["task"] == "cassi":
        data = synthetic_cubes(32, size, config["channels"], seed=args.seed)
    else:
        data = synthetic_images(128, size, seed=args.seed, channels=config["channels"])
    return data, evaluation_images(config, operator, args.val)[0]


def metric_options(config: dict[str, Any], operator: Any, args: argparse.Namespace) -> dict[str, Any]:
    """``evaluate``'s y_channel and border: the options given, else the task's (SR: luma, scale)."""
    sr = config["task"] == "sr"
    y_channel = args.y_channel if getattr(args, "y_channel", None) is not None else sr
    border = args.border if getattr(args, "border", None) is not None else (operator.scale if sr else 0)
    return {"y_channel": y_channel, "border": border}


# ================================================================================ files
def read_measurement(path: Path, config: dict[str, Any]) -> torch.Tensor:
    """A measurement y for ``lorun restore --measurement``: an image, or an array in .npy/.mat."""
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


def write_output(path: Path, x: torch.Tensor) -> None:
    """Write a restored image as .png or the raw tensor as .npy, atomically."""
    if path.suffix.lower() == ".npy":
        with atomic_write(path) as f:
            np.save(f, x.detach().cpu().numpy())
        return
    if path.suffix.lower() != ".png":
        raise InvalidArgumentError(f"OUTPUT must end in .png or .npy, got {path}")
    from PIL import Image

    save_png(path, Image.fromarray(to_display(x)))


def as_input(x: torch.Tensor, path: Path, config: dict[str, Any]) -> torch.Tensor:
    """A gray input image restored by a colour model (its channels replicated) comes back gray."""
    gray_in = path.suffix.lower() in IMAGE_SUFFIXES and config["task"] != "cassi" and image_channels(path) == 1
    return x.mean(dim=0, keepdim=True) if gray_in and x.shape[0] == 3 else x
