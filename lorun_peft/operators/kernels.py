"""Blur kernels for super-resolution: the paper's 12-kernel bank built in code, and a loader.

Every kernel is a float32 (size, size) tensor that is non-negative and sums to 1. Builders place
the kernel's centre at ``((size - 1) / 2, (size - 1) / 2)``; for odd sizes that is the pixel
``size // 2``, which is where ``BlurDownsample`` puts the centre of a kernel.

>>> bank = kernel_bank()
>>> bank.shape
torch.Size([12, 25, 25])
>>> bool(torch.allclose(bank.sum(dim=(1, 2)), torch.ones(12)))
True
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import check_int, check_number
from ..errors import CorruptFileError, InvalidArgumentError

__all__ = ["gaussian_kernel", "motion_kernel", "kernel_bank", "load_kernels", "ISOTROPIC_SIGMAS"]

ISOTROPIC_SIGMAS = (0.7, 1.2, 1.6, 2.0)
"""Standard deviations (px) of the bank's four isotropic Gaussians, as in USRNet and the paper."""


def _normalised(kernel: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(kernel / kernel.sum()).to(torch.float32)


def gaussian_kernel(
    size: int = 25, sigma_x: float = 1.6, sigma_y: float | None = None, angle: float = 0.0
) -> torch.Tensor:
    """A (size, size) Gaussian; ``sigma_x`` lies along ``angle`` (radians from the column axis).

    ``sigma_y`` defaults to ``sigma_x`` (isotropic). Sigmas are in pixels.

    >>> k = gaussian_kernel(9, 2.0, 1.0, angle=math.pi / 2)
    >>> bool(torch.allclose(k, gaussian_kernel(9, 2.0, 1.0).T, atol=1e-7))
    True
    """
    size = check_int(size, "size")
    sx = check_number(sigma_x, "sigma_x")
    sy = sx if sigma_y is None else check_number(sigma_y, "sigma_y")
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2
    rows, cols = np.meshgrid(offsets, offsets, indexing="ij")
    c, s = math.cos(float(angle)), math.sin(float(angle))
    u = c * cols + s * rows  # coordinate along the sigma_x axis
    v = -s * cols + c * rows  # and along the sigma_y axis
    return _normalised(np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2)))


def motion_kernel(size: int = 25, length: float = 15.0, seed: int = 0, curvature: float = 0.6) -> torch.Tensor:
    """A (size, size) motion blur: a random camera path of ``length`` px, rasterised.

    The path starts in a random direction whose heading then drifts as a random walk
    (``curvature`` radians per sqrt(px); 0 gives a straight line). It is centred on its centroid,
    shrunk if it would not fit, drawn with bilinear splatting and normalised to sum 1.

    >>> k = motion_kernel(15, length=8.0, seed=3)
    >>> k.shape, bool(k.min() >= 0), round(float(k.sum()), 5)
    (torch.Size([15, 15]), True, 1.0)
    """
    size = check_int(size, "size")
    length = check_number(length, "length", positive=False)
    curvature = check_number(curvature, "curvature", positive=False)
    rng = np.random.default_rng(seed)
    n = max(2, math.ceil(4 * length) + 1)  # a point every quarter pixel
    step = length / (n - 1)
    heading = rng.uniform(0, 2 * math.pi) + np.cumsum(rng.normal(0.0, curvature * math.sqrt(step), n))
    path = np.cumsum(np.stack([np.sin(heading), np.cos(heading)], axis=1) * step, axis=0)  # (row, col)
    path -= path.mean(axis=0)
    reach = (size - 1) / 2 - 0.5  # keep a half pixel margin so every splat lands inside
    extent = np.abs(path).max()
    if extent > reach:
        path *= max(reach, 0.0) / extent
    points = path + (size - 1) / 2
    kernel = np.zeros((size, size))
    base = np.floor(points).astype(int)
    frac = points - base
    for dr, dc in ((0, 0), (0, 1), (1, 0), (1, 1)):
        weight = (frac[:, 0] if dr else 1 - frac[:, 0]) * (frac[:, 1] if dc else 1 - frac[:, 1])
        r = np.clip(base[:, 0] + dr, 0, size - 1)
        c = np.clip(base[:, 1] + dc, 0, size - 1)
        np.add.at(kernel, (r, c), weight)
    return _normalised(kernel)


def kernel_bank(size: int = 25, seed: int = 0) -> torch.Tensor:
    """The paper's 12 SR kernels, (12, size, size) float32, each non-negative and summing to 1.

    0-3: isotropic Gaussians, sigma 0.7, 1.2, 1.6, 2.0 px (independent of ``seed``);
    4-7: anisotropic Gaussians, sigma_x in [2, 3] px, sigma_y = (0.4 to 0.75) sigma_x, random angle;
    8-11: motion blurs (``motion_kernel``, curvature 0.6) with paths of (12 to 22) * size / 25 px.
    The same ``seed`` always gives the same bank.

    >>> torch.equal(kernel_bank(seed=1), kernel_bank(seed=1))
    True
    """
    size = check_int(size, "size")
    rng = np.random.default_rng(seed)
    kernels = [gaussian_kernel(size, sigma) for sigma in ISOTROPIC_SIGMAS]
    for _ in range(4):
        sigma_x = rng.uniform(2.0, 3.0)
        sigma_y = sigma_x * rng.uniform(0.4, 0.75)
        kernels.append(gaussian_kernel(size, sigma_x, sigma_y, angle=rng.uniform(0, math.pi)))
    for _ in range(4):
        length = rng.uniform(12.0, 22.0) * size / 25
        kernels.append(motion_kernel(size, length, seed=int(rng.integers(2**31)), curvature=0.6))
    return torch.stack(kernels)


# ------------------------------------------------------------------------------- loading
def load_kernels(path: str | os.PathLike) -> torch.Tensor:
    """Read blur kernels from a file as a (K, h, w) float32 tensor, each normalised to sum 1.

    Formats, by suffix:
    - ``.mat`` (MATLAB v5, needs scipy): the variable ``kernels`` (or the file's only variable),
      either a cell array of equally sized 2-D kernels (as USRNet's ``kernels_12.mat``), a 2-D
      kernel, or an (h, w, K) array (MATLAB's layout). MATLAB v7.3 (HDF5) files are not read.
    - ``.npy`` (never unpickled): an (h, w) kernel or a (K, h, w) stack.
    - ``.png`` (needs Pillow): one kernel image, converted to gray.

    A missing file raises ``FileNotFoundError``; an unreadable one, or one whose kernels are not
    finite or do not sum to a positive value, raises ``CorruptFileError`` naming the file.

    >>> import tempfile, numpy as np
    >>> f = os.path.join(tempfile.mkdtemp(), "k.npy")
    >>> np.save(f, np.ones((2, 3, 3)))
    >>> load_kernels(f).shape
    torch.Size([2, 3, 3])
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"kernel file not found: {path}")
    suffix = path.suffix.lower()
    readers = {".mat": _read_mat, ".npy": _read_npy, ".png": _read_png}
    if suffix not in readers:
        raise InvalidArgumentError(f"path {path} has an unsupported kernel file type; use one of {sorted(readers)}")
    stack = readers[suffix](path)
    if stack.ndim != 3 or 0 in stack.shape:
        raise CorruptFileError(f"kernel file {path} does not hold 2-D kernels (got shape {stack.shape})")
    if not np.isfinite(stack).all():
        raise CorruptFileError(f"kernel file {path} contains NaN or infinite values")
    sums = stack.sum(axis=(1, 2))
    if not (sums > 0).all():
        bad = np.flatnonzero(sums <= 0).tolist()
        raise CorruptFileError(f"kernel file {path}: kernel(s) {bad} do not sum to a positive value")
    return torch.from_numpy(stack / sums[:, None, None]).to(torch.float32)


def _read_mat(path: Path) -> np.ndarray:
    try:
        import scipy.io
    except ImportError as err:
        raise ImportError("reading .mat kernel files needs scipy: pip install scipy") from err
    try:
        contents = scipy.io.loadmat(str(path))
    except NotImplementedError as err:  # scipy's answer to MATLAB v7.3 (HDF5) files
        raise CorruptFileError(f"kernel file {path} is MATLAB v7.3 (HDF5), which scipy cannot read: {err}") from err
    except Exception as err:  # noqa: BLE001 (scipy raises many types on bad bytes)
        raise CorruptFileError(f"kernel file {path} is not a readable .mat file: {err}") from err
    names = [name for name in contents if not name.startswith("__")]
    if "kernels" in names:
        value = contents["kernels"]
    elif len(names) == 1:
        value = contents[names[0]]
    else:
        raise CorruptFileError(f"kernel file {path} has no 'kernels' variable (it has {names})")
    try:
        if value.dtype == object:  # a cell array: one kernel per cell
            cells = [np.asarray(cell, dtype=np.float64) for cell in value.ravel(order="F")]
            if any(cell.ndim != 2 for cell in cells) or len({cell.shape for cell in cells}) != 1:
                raise CorruptFileError(
                    f"kernel file {path}: the cells must be 2-D kernels of one size, got {[c.shape for c in cells]}"
                )
            return np.stack(cells)
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise CorruptFileError(f"kernel file {path} does not hold numeric kernels: {err}") from err
    if array.ndim == 2:
        return array[None]
    if array.ndim == 3:
        return np.moveaxis(array, -1, 0)  # MATLAB stores a stack as (h, w, K)
    raise CorruptFileError(f"kernel file {path} holds an array of shape {array.shape}, not kernels")


def _read_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
        array = np.asarray(array, dtype=np.float64)
    except (ValueError, OSError, EOFError, TypeError) as err:
        raise CorruptFileError(f"kernel file {path} is not a readable numeric .npy file: {err}") from err
    return array[None] if array.ndim == 2 else array


def _read_png(path: Path) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError as err:
        raise ImportError("reading .png kernel images needs Pillow: pip install pillow") from err
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("F"), dtype=np.float64)
    except (OSError, ValueError, SyntaxError) as err:  # PIL.UnidentifiedImageError is an OSError
        raise CorruptFileError(f"kernel file {path} is not a readable image: {err}") from err
    return array[None]
