"""The data side of the ``lorun`` commands: the task's operator from the command-line options,
the training, validation and evaluation images fitted to it (CASSI: cubes, or cubes generated
from images by :mod:`lorun_peft.data.spectral`), and the files ``restore`` reads and
writes.

>>> import torch
>>> from lorun_peft.cli.parser import build_parser
>>> operator = make_operator(build_parser().parse_args(["inspect", "--task", "sr", "--scale", "2"]))
>>> fit_images({"task": "sr"}, operator, [torch.rand(3, 33, 34)])[0].shape
torch.Size([3, 32, 34])
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.images import IMAGE_SUFFIXES, ImageFolder, image_channels, list_files, load_image
from ..errors import CorruptFileError, InvalidArgumentError
from ..metrics import rgb_to_y
from ..persistence.atomic import atomic_write
from ..plots import save_png, to_display
from ..tasks import task_named, task_of

__all__ = [
    "as_input",
    "builtin_eval_images",
    "evaluation_images",
    "fit_images",
    "folder_images",
    "is_main",
    "make_operator",
    "measurement_colour",
    "metric_options",
    "read_channels",
    "read_measurement",
    "record_settings",
    "write_measurement",
    "say",
    "task_channels",
    "training_data",
    "use_mask",
    "whole_images",
    "write_output",
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
    """What the task's options fix (CASSI: the bands); else --channels, or what the training images
    hold (3 if any is colour), or the task's default (1; 3 for sr) on built-in images."""
    task = task_named(args.task)
    fixed = task.channels_from_args(args)
    if fixed:
        return fixed
    if args.channels:
        return args.channels
    data = getattr(args, "data", None)
    if data is not None and Path(data).is_dir():
        return max((image_channels(f) for f in list_files(data, IMAGE_SUFFIXES)), default=1)
    return task.default_channels


def make_operator(args: argparse.Namespace) -> torch.nn.Module:
    """The task's operator from the command-line options."""
    return task_named(args.task).make_operator(args, task_channels(args))


def use_mask(operator: Any, path: Path | None) -> None:
    """``--mask FILE`` of restore, eval and export: for the tasks that take one (CASSI: the mask of
    the measurement's system, any size)."""
    if path is not None:
        task_of(operator).use_mask(operator, path)


# =============================================================================== images
def whole_images(data: Any, limit: int = 400) -> list[torch.Tensor]:
    """Training images to fit the linear estimate on: a dataset's whole images, or the tensors."""
    if hasattr(data, "full"):
        return [data.full(i) for i in range(min(len(data), limit))]
    return list(data)[:limit]


def fit_images(config: dict[str, Any], operator: Any, images: list[torch.Tensor]) -> list[torch.Tensor]:
    """Make whole images fit the task's operator (SR: multiples of the scale, CASSI: the mask's
    centre-sized window; :meth:`lorun_peft.tasks.Task.fit_image`)."""
    task = task_of(operator)
    return [task.fit_image(operator, x) for x in images]


def builtin_eval_images(config: dict[str, Any], operator: Any, seed: int = 1000) -> tuple[list[torch.Tensor], list[str]]:
    """Held-out built-in images (other seeds than training): 4 images of 64 x 64, or 2 cubes."""
    task = task_of(operator)
    images = list(task.builtin_images(operator, config["channels"], 4, 64, seed))
    return images, [f"{task.builtin_name}_{i}" for i in range(len(images))]


def read_channels(config: dict[str, Any], operator: Any, gray: bool = False) -> int | None:
    """The channels to read images with: None (as each file holds) where a gray model restores
    colour by its task's colour policy (:mod:`lorun_peft.data.colour`) and ``gray`` (``--gray``) is
    not asked; else the model's own (colour converted to gray, gray replicated)."""
    task = task_of(operator) if operator is not None else task_named(config["task"])
    return None if config["channels"] == 1 and not gray and task.colour != "none" else config["channels"]


def folder_images(config: dict[str, Any], folder: Path | list[Path], luma: bool = False,
                  operator: Any = None, gray: bool = False) -> tuple[list[torch.Tensor], list[str]]:
    """The images (or cubes) of a folder, or of a list of files, whole, as the task reads them
    (CASSI: cubes, or cubes generated from photographs; colour stays colour for a gray model, see
    :func:`read_channels`, unless ``gray``). ``luma`` (a gray model): each image's luma, the Y of
    YCbCr in [16, 235] / 255 that SR papers restore and score, restored as a gray image."""
    if luma:
        if config["channels"] != 1:
            raise InvalidArgumentError(f"--luma restores the luma channel with a gray model; this model has {config['channels']} channels")
        data: Any = ImageFolder(folder, channels=3, augment=False)
        return [rgb_to_y(data.full(i)[None])[0] for i in range(len(data))], data.names
    task = task_of(operator) if operator is not None else task_named(config["task"])
    data = task.image_set(folder, read_channels(config, operator, gray))
    return [data.full(i) for i in range(len(data))], data.names


def evaluation_images(config: dict[str, Any], operator: Any, folder: Path | list[Path] | None,
                      luma: bool = False, gray: bool = False) -> tuple[list[torch.Tensor], list[str]]:
    """(images, names) to evaluate on, fitted to the operator: a folder's (``luma``, ``gray``: see
    :func:`folder_images`) or the built-in ones."""
    images, names = folder_images(config, folder, luma, operator, gray) if folder else builtin_eval_images(config, operator)
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
    task = task_of(operator)
    size = task.training_patch(operator, args.patch)
    if args.data is None:
        data = task.builtin_images(operator, config["channels"], 128, size, args.seed, training=True)
        return data, evaluation_images(config, operator, args.val, gray=True)[0]
    files = list_files(args.data, task.file_suffixes(args.data))
    held = 0 if args.val or len(files) < 2 else min(4, max(1, len(files) // 10))
    data = task.image_set(files[: len(files) - held], config["channels"], patch_size=size, seed=args.seed)
    if args.val:
        return data, evaluation_images(config, operator, args.val, gray=True)[0]
    if not held:
        return data, None
    say(f"validating on {held} image(s) held out of {args.data}: {', '.join(p.name for p in files[-held:])} (or give --val DIR)")
    return data, evaluation_images(config, operator, files[-held:], gray=True)[0]


def metric_options(config: dict[str, Any], operator: Any, args: argparse.Namespace) -> dict[str, Any]:
    """``evaluate``'s y_channel and border: the options given, else the task's (SR: luma, scale)."""
    task = task_of(operator).metric_options(operator)
    y_channel = args.y_channel if getattr(args, "y_channel", None) is not None else task["y_channel"]
    border = args.border if getattr(args, "border", None) is not None else task["border"]
    return {"y_channel": y_channel, "border": border}


# ================================================================================ files
MEASUREMENT_SUFFIXES = (".npy", ".npz", ".mat")  # besides images

def read_measurement(path: Path, config: dict[str, Any], operator: Any = None, gray: bool = False) -> torch.Tensor:
    """A measurement y for ``lorun restore --measurement``: an image (colour kept for a gray model
    unless ``gray``, see :func:`read_channels`), or an array in .npy/.mat, or
    an .npz written by ``lorun measure`` (``y`` and what the task records of its operator, checked
    by the task: block CS refuses a measurement of another sampling matrix)."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return load_image(path, read_channels(config, operator, gray) if task_of(operator).measurement_is_image else 1)[None]
    if suffix not in MEASUREMENT_SUFFIXES:
        raise InvalidArgumentError(f"measurement {path} must be an image, .npy, .npz or .mat file")
    if not path.is_file():
        raise FileNotFoundError(f"measurement file not found: {path}")
    if suffix in (".npy", ".npz"):
        try:
            contents = np.load(path, allow_pickle=False)
            if suffix == ".npz":
                contents = {k: contents[k] for k in contents.files}
        except (ValueError, OSError, EOFError) as err:
            raise CorruptFileError(f"measurement {path} is not a readable {suffix} file: {err}") from err
        if suffix == ".npz":
            if "y" not in contents:
                raise CorruptFileError(f"measurement {path} has no array 'y' (it has {sorted(contents)})")
            contents = task_of(operator).check_record(path, contents, operator) if operator is not None else contents["y"]
        array = np.asarray(contents)
    else:
        from scipy.io import loadmat

        try:
            contents = {k: v for k, v in loadmat(str(path)).items() if not k.startswith("__")}
        except Exception as err:
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


COLOUR_KEY = "colour_channels"  # in a .npz: y holds R, G, B of each image in turn (gray measurements of a colour image)


def write_measurement(path: Path, y: torch.Tensor, operator: Any, colour: bool = False) -> None:
    """Write a measurement atomically: .npz with ``y`` and what the task records of its operator
    (block CS: the sampling matrix's fingerprint, its rows and one fingerprint per row, so that a
    model of fewer rows of the same nested basis can restore it), or a bare .npy. ``colour``: y's
    batch holds the R, G and B measurements of each image in turn (recorded as ``colour_channels``
    = 3 in a .npz; refused for .npy, which could not say so)."""
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".npy"):
        raise InvalidArgumentError(f"a measurement is written as .npz (with its sampling) or .npy, got {path}")
    if colour and suffix == ".npy":
        raise InvalidArgumentError(f"{path}: the measurement of a colour image is written as .npz (which records its "
                                   "channels), or measure a gray image (--gray)")
    array = y.detach().cpu().float().numpy()
    record = {**task_of(operator).measurement_record(operator), **({COLOUR_KEY: np.int64(3)} if colour else {})}
    with atomic_write(path) as f:
        if suffix == ".npy":
            np.save(f, array)
        else:
            np.savez(f, y=array, **record)


def measurement_colour(path: Path) -> bool:
    """Whether a measurement file holds the R, G, B measurements of colour images (a .npz of
    :func:`write_measurement` with ``colour=True``)."""
    if path.suffix.lower() != ".npz":
        return False
    with np.load(path, allow_pickle=False) as contents:
        return COLOUR_KEY in contents.files and int(contents[COLOUR_KEY]) == 3


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
    gray_in = path.suffix.lower() in IMAGE_SUFFIXES and image_channels(path) == 1
    return x.mean(dim=0, keepdim=True) if gray_in and x.shape[0] == 3 else x


# ======================================================================== run settings
SETTINGS_FILE = "settings.json"


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flatten(item, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): value}


def record_settings(folder: Path, settings: dict[str, Any], fresh: bool) -> None:
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
