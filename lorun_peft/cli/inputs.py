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
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.images import (
    CUBE_SUFFIXES,
    IMAGE_SUFFIXES,
    ImageFolder,
    SpectralCubes,
    center_crop,
    image_channels,
    list_files,
    load_image,
    modcrop,
    synthetic_images,
)
from ..errors import CorruptFileError, InvalidArgumentError
from ..metrics import rgb_to_y
from ..persistence.atomic import atomic_write
from ..operators import CASSI, BlockCS, BlurDownsample
from ..operators.cassi import load_mask
from ..operators.sampling import row_fingerprints
from ..plots import save_png, to_display

__all__ = [
    "as_input",
    "builtin_eval_images",
    "evaluation_images",
    "fit_images",
    "folder_images",
    "generated_cubes",
    "is_main",
    "make_operator",
    "metric_options",
    "read_measurement",
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
        from ..operators.kernels import kernel_bank, load_kernels

        bank = load_kernels(args.kernel_file) if args.kernel_file else kernel_bank()
        if not 0 <= args.kernel < len(bank):
            raise InvalidArgumentError(f"--kernel must be in 0..{len(bank) - 1}, got {args.kernel}")
        if args.patch % args.scale:
            raise InvalidArgumentError(f"--patch {args.patch} must be a multiple of --scale {args.scale}")
        return BlurDownsample(bank[args.kernel], scale=args.scale, channels=channels)
    if args.mask is not None:  # train on random crops of a larger mask, as TSA-Net and MST do
        mask = load_mask(args.mask)
        crop = args.patch if max(mask.shape) > args.patch else None
        return CASSI(mask, step=args.dispersion, bands=args.bands, crop=crop, mask_file=_recorded(args.mask), seed=args.seed)
    mask = (torch.rand(args.patch, args.patch, generator=torch.Generator().manual_seed(args.seed)) > 0.5).float()
    return CASSI(mask, step=args.dispersion, bands=args.bands)


def use_mask(operator: Any, path: Path | None) -> None:
    """``--mask FILE`` of restore and eval: a CASSI model restores with this mask (any size)."""
    if path is None:
        return
    if not isinstance(operator, CASSI):
        raise InvalidArgumentError(f"--mask is for cassi models; this model's operator is {type(operator).__name__}")
    operator.use_mask(load_mask(path))


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
        photos = list(synthetic_images(2, max(operator.height, operator.width), seed=seed))
        cubes = generated_cubes(photos, config["channels"], augment=False, seed=seed)
        return [cubes.full(i) for i in range(len(cubes))], [f"cube_{i}" for i in range(len(cubes))]
    images = synthetic_images(4, 64, seed=seed, channels=config["channels"])
    return list(images), [f"synthetic_{i}" for i in range(len(images))]


def generated_cubes(images: Any, bands: int, **options: Any) -> Any:
    """:class:`lorun_peft.data.spectral.GeneratedCubes` of ``images`` with ``bands`` bands (the 28
    TSA-Net band centres, or ``bands`` equally spaced over 453.5-648.5 nm)."""
    from ..data.spectral import BAND_CENTRES, GeneratedCubes

    wavelengths = BAND_CENTRES if bands == len(BAND_CENTRES) else torch.linspace(453.5, 648.5, bands).tolist()
    return GeneratedCubes(images, wavelengths=wavelengths, **options)


def _cube_files(folder: Path | list[Path]) -> bool:
    """Whether a CASSI data folder (or file list) holds cubes; else its images make generated cubes."""
    if isinstance(folder, list):
        return any(Path(f).suffix.lower() in CUBE_SUFFIXES for f in folder)
    folder = Path(folder)
    return not folder.is_dir() or any(f.suffix.lower() in CUBE_SUFFIXES for f in folder.iterdir())


def folder_images(config: dict[str, Any], folder: Path | list[Path], luma: bool = False) -> tuple[list[torch.Tensor], list[str]]:
    """The images (or cubes) of a folder, or of a list of files, whole. CASSI: a folder of gray
    images gives the cubes :class:`lorun_peft.data.spectral.GeneratedCubes` makes of them. ``luma``
    (a gray model): each image's luma, the Y of YCbCr in [16, 235] / 255 that SR papers restore and
    score, instead of its gray conversion (full-range luma)."""
    if luma:
        if config["channels"] != 1:
            raise InvalidArgumentError(f"--luma restores the luma channel with a gray model; this model has {config['channels']} channels")
        data: Any = ImageFolder(folder, channels=3, augment=False)
        return [rgb_to_y(data.full(i)[None])[0] for i in range(len(data))], data.names
    if config["task"] == "cassi" and not _cube_files(folder):
        data = generated_cubes(folder, config["channels"], augment=False, seed=10_000)
    elif config["task"] == "cassi":
        data = SpectralCubes(folder, augment=False)
    else:
        data = ImageFolder(folder, channels=config["channels"], augment=False)
    return [data.full(i) for i in range(len(data))], data.names


def evaluation_images(config: dict[str, Any], operator: Any, folder: Path | list[Path] | None,
                      luma: bool = False) -> tuple[list[torch.Tensor], list[str]]:
    """(images, names) to evaluate on, fitted to the operator: a folder's (``luma``: see
    :func:`folder_images`) or the built-in ones."""
    images, names = folder_images(config, folder, luma) if folder else builtin_eval_images(config, operator)
    fitted = []
    for x, name in zip(images, names):
        try:
            fitted.append(fit_images(config, operator, [x])[0])
        except InvalidArgumentError as err:
            raise InvalidArgumentError(f"{name} does not fit the model's operator: {err}") from err
    return fitted, names


def training_data(args: argparse.Namespace, config: dict[str, Any], operator: Any) -> tuple[Any, Any]:
    """(training data, validation images) for ``lorun train``. With ``--data`` and no ``--val`` a
    few images of the folder (the last tenth, 1 to 4) are held out to validate on. CASSI trains on
    the cubes of the folder or, when it holds images instead, on cubes generated from them."""
    size = operator.height if config["task"] == "cassi" else args.patch
    if args.data is not None:
        cassi = config["task"] == "cassi"
        generated = cassi and not _cube_files(args.data)
        files = list_files(args.data, CUBE_SUFFIXES if cassi and not generated else IMAGE_SUFFIXES)
        held = 0 if args.val or len(files) < 2 else min(4, max(1, len(files) // 10))
        training = files[: len(files) - held]
        if generated:
            data: Any = generated_cubes(training, config["channels"], patch_size=size, seed=args.seed)
            say(f"cassi: training on spectral cubes generated from the images of {args.data} (lorun_peft.data.spectral)")
        elif cassi:
            data = SpectralCubes(training, patch_size=size)
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
        data = generated_cubes(list(synthetic_images(32, size, seed=args.seed)), config["channels"], seed=args.seed)
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
MEASUREMENT_SUFFIXES = (".npy", ".npz", ".mat")  # besides images

def read_measurement(path: Path, config: dict[str, Any], operator: Any = None) -> torch.Tensor:
    """A measurement y for ``lorun restore --measurement``: an image, or an array in .npy/.mat, or
    an .npz written by ``lorun measure`` (``y`` and the ``sampling`` fingerprint of the matrix it was
    taken with, refused when it is not ``operator``'s: restored with another matrix, the result
    would be garbage with no error)."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return load_image(path, config["channels"] if config["task"] == "sr" else 1)[None]
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
            contents = _check_sampling(path, contents, operator)
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


def _check_sampling(path: Path, contents: dict[str, np.ndarray], operator: Any) -> np.ndarray:
    """``y`` of an .npz, checked against the sampling it records: the model's own, or more rows of
    the same nested basis (its rows' fingerprints begin with the model's), of which the first m are
    kept; any other sampling is refused."""
    y = contents["y"]
    recorded = str(contents["sampling"]) if "sampling" in contents else None
    expected = getattr(operator, "sampling_fingerprint", None)
    if recorded is None or expected is None or recorded == expected:
        return y
    rows = [str(r) for r in contents["row_fingerprints"]] if "row_fingerprints" in contents else []
    ours = row_fingerprints(operator.phi)
    m = len(ours)
    if len(rows) > m and rows[:m] == ours and y.ndim == 4 and y.shape[1] % len(rows) == 0:
        channels = y.shape[1] // len(rows)  # channel c's measurements are y[:, c*R:(c+1)*R]
        kept = y.reshape(y.shape[0], channels, len(rows), *y.shape[2:])[:, :, :m].reshape(y.shape[0], channels * m, *y.shape[2:])
        say(f"note: {path} holds {len(rows)} rows of a nested sampling basis whose first {m} are this model's: "
            f"restoring with those {m}")
        return kept
    raise InvalidArgumentError(
        f"measurement {path} was taken with sampling {recorded}, but this model expects sampling {expected} "
        "(`lorun inspect --model ...` names a model's sampling); restore it with the model it was measured for")


def write_measurement(path: Path, y: torch.Tensor, operator: Any) -> None:
    """Write a measurement atomically: .npz with ``y`` and, for block CS, ``sampling`` (the matrix's
    fingerprint, checked by :func:`read_measurement`), ``rows`` (m) and ``row_fingerprints`` (one per
    row, so that a model of fewer rows of the same nested basis can restore it), or a bare .npy."""
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".npy"):
        raise InvalidArgumentError(f"a measurement is written as .npz (with its sampling) or .npy, got {path}")
    array = y.detach().cpu().float().numpy()
    with atomic_write(path) as f:
        if suffix == ".npy":
            np.save(f, array)
        else:
            sampling = getattr(operator, "sampling_fingerprint", None)
            record = {} if sampling is None else {"sampling": np.array(sampling), "rows": np.array(operator.measurements),
                                                  "row_fingerprints": np.array(row_fingerprints(operator.phi))}
            np.savez(f, y=array, **record)


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


def _recorded(path: Path) -> str:
    """How a mask file is named in the saved network: as given when relative, else its folder and
    name only (an absolute path would carry the user's directories into bundles pushed to the Hub)."""
    return path.as_posix() if not path.is_absolute() else Path(*path.parts[-2:]).as_posix()
