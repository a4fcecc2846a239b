"""Single-disperser CASSI (coded aperture snapshot spectral imaging), as in TSA-Net, MST and DAUHST.

Every band of an ``N x bands x H x W`` spectral cube is multiplied by the same coded aperture
``mask`` (H x W), band ``k`` is shifted right by ``step * k`` pixels along the width, and the
shifted bands are summed on the detector::

    y[n, 0, i, j + step * k] += mask[i, j] * x[n, k, i, j]

so ``y`` has shape ``N x 1 x H x (W + step * (bands - 1))``: 28 x 256 x 256 with step 2 gives
1 x 256 x 310. ``Phi Phi^T`` is diagonal (``D = sum_k shift_k(mask^2)``), which gives a closed-form
``prox_l2`` and the pseudo-inverse ``initial_estimate``.

>>> import torch
>>> op = CASSI(torch.rand(8, 8), step=2, bands=4)
>>> y = op.A(torch.rand(1, 4, 8, 8))
>>> tuple(y.shape)
(1, 1, 8, 14)
>>> tuple(op.A_adjoint(y).shape)
(1, 4, 8, 8)
"""

from __future__ import annotations

import numbers
import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import check_int
from ..data.images import random_mask_crop
from ..errors import CorruptFileError, InvalidArgumentError
from .base import LinearOperator, register_operator

__all__ = ["CASSI", "load_mask"]


def _as_mask(mask: Any) -> torch.Tensor:
    """A detached, floating-point copy of ``mask`` (tensor or array-like), checked to be 2-D."""
    try:
        tensor = mask.detach().clone() if isinstance(mask, torch.Tensor) else torch.as_tensor(np.asarray(mask))
    except (TypeError, ValueError, RuntimeError) as err:
        raise InvalidArgumentError(f"mask must be an H x W tensor or array, got {type(mask).__name__}") from err
    if tensor.dim() != 2 or tensor.numel() == 0:
        raise InvalidArgumentError(f"mask must be a non-empty 2-D (H x W) array, got shape {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        tensor = tensor.to(torch.get_default_dtype())
    if not bool(torch.isfinite(tensor).all()):
        raise InvalidArgumentError("mask must contain only finite values")
    return tensor.contiguous()


@register_operator
class CASSI(LinearOperator):
    """Single-disperser CASSI: ``y = sum_k shift_k(x_k * mask)``, band k shifted by ``step * k``.

    Args:
        mask: the coded aperture, any H x W tensor or array (real masks are not binary; the
            TSA-Net one has values in (0, 1]). Copied; kept as the buffer (or, with
            ``learnable_mask=True``, the parameter) ``mask``, so its values live in the state_dict.
        step: dispersion in pixels per band (2 in TSA-Net / MST / DAUHST).
        bands: number of spectral bands (28 in those papers).
        learnable_mask: make the mask an ``nn.Parameter`` trained with the network.
        crop: train on random ``crop`` x ``crop`` windows of ``mask`` (TSA-Net's and MST's
            real-data training): the operator's mask is one such window, and a new one is drawn
            before every training batch (``lorun_peft.train`` sets ``image_size`` per batch; in
            eval mode nothing changes). The full mask is not saved; ``mask_file`` and ``crop``
            are recorded in the config.
        mask_file: where the mask came from (recorded in the config, for the user).
        seed: seed of the crop positions (the first window is the same for the same seed).

    The mask is data: :meth:`use_mask` puts in a mask of another size (the full coded aperture
    of a real system) so a network trained on crops restores measurements of that size.

    Shapes: ``x`` is ``N x bands x H x W``; ``y`` is ``N x 1 x H x (W + step * (bands - 1))``
    (the channel dimension of size 1 is kept so measurements look like one-channel images).

    >>> import torch
    >>> op = CASSI(torch.rand(256, 256), step=2, bands=28)
    >>> tuple(op.A(torch.rand(1, 28, 256, 256)).shape)
    (1, 1, 256, 310)
    >>> tuple(op.use_mask(torch.rand(64, 80)).A(torch.rand(1, 28, 64, 80)).shape)
    (1, 1, 64, 134)
    """

    mask: torch.Tensor

    def __init__(
        self,
        mask: torch.Tensor | np.ndarray,
        step: int = 2,
        bands: int = 28,
        learnable_mask: bool = False,
        crop: int | None = None,
        mask_file: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.step = check_int(step, "step", 0)
        self.bands = check_int(bands, "bands", 1)
        if not isinstance(learnable_mask, bool):
            raise InvalidArgumentError(f"learnable_mask must be a bool, got {learnable_mask!r}")
        self.learnable_mask = learnable_mask
        if mask_file is not None and not isinstance(mask_file, str):
            raise InvalidArgumentError(f"mask_file must be a string or None, got {mask_file!r}")
        self.mask_file, self.crop, self.seed, self._crops_drawn = mask_file, crop, check_int(seed, "seed", 0), 0
        tensor = _as_mask(mask)
        self.full_mask: torch.Tensor | None = None  # the mask crops are drawn from (not saved)
        if crop is not None:
            check_int(crop, "crop", 1)
            if learnable_mask:
                raise InvalidArgumentError("crop (training on random mask windows) needs a fixed mask, not learnable_mask=True")
            if crop > min(tensor.shape):
                raise InvalidArgumentError(f"crop {crop} is larger than the {tensor.shape[0]} x {tensor.shape[1]} mask")
            self.full_mask, tensor = tensor, self._window(tensor)
        if learnable_mask:
            self.mask = nn.Parameter(tensor)
        else:
            self.register_buffer("mask", tensor)

    # ---- the mask is data ----------------------------------------------------------------------

    def _window(self, mask: torch.Tensor) -> torch.Tensor:
        """The next random ``crop`` x ``crop`` window of ``mask`` (seeded by ``seed`` and a count)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self._crops_drawn)
        self._crops_drawn += 1
        return random_mask_crop(mask, self.crop, g)

    @property
    def image_size(self) -> None:
        """Always None, so ``lorun_peft.training.loop.fit_operator`` sets it before every batch."""
        return None

    @image_size.setter
    def image_size(self, size: Any) -> None:
        """Training with ``crop``: a new mask window for the batch about to be simulated."""
        if size is not None and self.training and self.full_mask is not None:
            with torch.no_grad():
                self.mask.copy_(self._window(self.full_mask))

    def use_mask(self, mask: Any) -> CASSI:
        """Restore with ``mask`` from now on: a tensor, array or file (``.mat`` key 'mask', ``.npy``).

        Any size: measurements must then be ``H x (W + step * (bands - 1))`` for the H x W mask.
        A learnt mask (``learnable_mask=True``) is a trained weight: only its values at the same
        size may be replaced, another size is refused. Returns self.
        """
        tensor = load_mask(mask) if isinstance(mask, (str, os.PathLike)) else _as_mask(mask)
        tensor = tensor.to(device=self.mask.device, dtype=self.mask.dtype)
        if self.learnable_mask:
            if tensor.shape != self.mask.shape:
                raise InvalidArgumentError(
                    f"this CASSI learnt its {self.height} x {self.width} mask (learnable_mask=True): it is a trained "
                    f"weight and cannot be replaced by a {tensor.shape[0]} x {tensor.shape[1]} mask; restore measurements "
                    f"of {self.height} x {self.measurement_width}, or train with a fixed mask"
                )
            with torch.no_grad():
                self.mask.copy_(tensor)
        else:
            self.mask = tensor
        self.full_mask = None
        return self

    # ---- shapes -------------------------------------------------------------------------------

    @property
    def height(self) -> int:
        return self.mask.shape[0]

    @property
    def width(self) -> int:
        return self.mask.shape[1]

    @property
    def measurement_width(self) -> int:
        """Width of ``y``: ``W + step * (bands - 1)``."""
        return self.width + self.step * (self.bands - 1)

    def _check_x(self, x: torch.Tensor, name: str = "x") -> None:
        expected = f"(N, {self.bands}, {self.height}, {self.width})"
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InvalidArgumentError(
                f"{name} must be a 4-D cube of shape {expected} (N x bands x H x W), got {shape}"
            )
        if x.shape[1] != self.bands:
            raise InvalidArgumentError(
                f"{name} has {x.shape[1]} bands but this CASSI has bands={self.bands}: "
                f"expected shape {expected}, got {tuple(x.shape)}"
            )
        if tuple(x.shape[2:]) != (self.height, self.width):
            raise InvalidArgumentError(
                f"{name} has H x W = {x.shape[2]} x {x.shape[3]} but the mask is {self.height} x {self.width}: "
                f"expected shape {expected}, got {tuple(x.shape)}"
            )

    def _check_y(self, y: torch.Tensor, name: str = "y") -> None:
        expected = (self.height, self.measurement_width)
        if (
            not isinstance(y, torch.Tensor)
            or y.dim() != 4
            or y.shape[1] != 1
            or tuple(y.shape[2:]) != expected
        ):
            shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            hint = ""
            if isinstance(y, torch.Tensor) and y.dim() >= 2 and tuple(y.shape[-2:]) != expected:
                rows, cols = y.shape[-2:]
                side = f"{rows} x {cols - self.step * (self.bands - 1)}"
                trained = f" (trained on {self.crop} x {self.crop} crops of {self.mask_file})" if self.mask_file else ""
                hint = (f"; the mask is {self.height} x {self.width}{trained} and y's width is the mask's + step * "
                        f"(bands - 1) = {self.step * (self.bands - 1)}: for this measurement give the {side} mask of "
                        "its system (lorun restore --mask FILE, or operator.use_mask(mask))")
            raise InvalidArgumentError(f"{name} must have shape (N, 1, {expected[0]}, {expected[1]}), got {shape}{hint}")

    # ---- the two shifts, without a loop over bands ----------------------------------------------

    def _shift_and_sum(self, cube: torch.Tensor) -> torch.Tensor:
        """(N, B, H, W) -> (N, 1, H, W'): out[..., j] = sum_k cube[:, k, :, j - step * k].

        Each band row is zero-padded to L = W + step * B and the B rows of an image row are laid
        end to end; read back as rows of length L - step = W', band k's row starts step * k
        earlier, which is exactly its shift (the pad absorbs the wrap-around).
        """
        n, b, h, w = cube.shape
        length = w + self.step * b
        rows = F.pad(cube.transpose(1, 2), (0, self.step * b)).reshape(n, h, b * length)
        skewed = rows[..., : b * (length - self.step)].view(n, h, b, length - self.step)
        return skewed.sum(dim=2).unsqueeze(1)

    def _unshift(self, y: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W') -> (N, B, H, W): out[:, k, :, j] = y[:, 0, :, j + step * k], a view of y.

        The B windows of width W taken every ``step`` pixels are exactly ``unfold``; this is the
        adjoint of ``_shift_and_sum``.
        """
        n, _, h, _ = y.shape
        if self.step == 0:
            return y.expand(n, self.bands, h, self.width)
        return y[:, 0].unfold(-1, self.width, self.step).transpose(1, 2)

    def _mask_as(self, like: torch.Tensor) -> torch.Tensor:
        return self.mask.to(dtype=like.dtype, device=like.device)

    # ---- the operator -------------------------------------------------------------------------

    def A(self, x: torch.Tensor) -> torch.Tensor:
        """Measurement ``N x 1 x H x (W + step * (bands - 1))`` of the cube ``x`` (N x bands x H x W)."""
        self._check_x(x)
        return self._shift_and_sum(x * self._mask_as(x))

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``Phi^T y``: shift each band's window back and multiply by the mask (N x bands x H x W)."""
        self._check_y(y)
        return (self._unshift(y) * self._mask_as(y)).contiguous()

    def diagonal(self, like: torch.Tensor | None = None) -> torch.Tensor:
        """``D = diag(Phi Phi^T) = sum_k shift_k(mask^2)``, shaped 1 x 1 x H x W'."""
        mask = self.mask if like is None else self._mask_as(like)
        return self._shift_and_sum((mask * mask).expand(1, self.bands, -1, -1))

    def prox_l2(self, z: torch.Tensor, y: torch.Tensor, gamma: float | torch.Tensor) -> torch.Tensor:
        """argmin_x gamma/2 ||A x - y||^2 + 1/2 ||x - z||^2 in closed form (Woodbury identity).

        ``(I + gamma Phi^T Phi)^-1 = I - gamma Phi^T (I + gamma D)^-1 Phi`` with D diagonal, so
        ``x = z + gamma Phi^T ((y - Phi z) / (1 + gamma D))``. ``gamma`` is a float, a 0-dim
        tensor (gradients flow) or one value per sample, shape (N,).
        """
        self._check_x(z, "z")
        self._check_y(y)
        gamma = self._gamma(gamma, z)
        residual = (y - self.A(z)) / (1 + gamma * self.diagonal(like=z))
        return z + gamma * self.A_adjoint(residual)

    def initial_estimate(self, y: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
        """``Phi^T (y / max(D, eps))``: the pseudo-inverse ``Phi^T (Phi Phi^T)^-1 y``.

        It is the first GAP (generalized alternating projection) step from x = 0, which GAP-net-style
        unfoldings start from; DAUHST's data step normalises by the same D. Where D < eps (mask zero
        on every band reaching a pixel), y is divided by eps instead.
        """
        self._check_y(y)
        return self.A_adjoint(y / self.diagonal(like=y).clamp_min(eps))

    @staticmethod
    def _gamma(gamma: float | torch.Tensor, z: torch.Tensor) -> float | torch.Tensor:
        if not isinstance(gamma, torch.Tensor):
            if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real):
                raise InvalidArgumentError(f"gamma must be a float or a tensor, got {gamma!r}")
            return float(gamma)
        if gamma.dim() == 0 or (gamma.dim() == 4 and gamma.shape[1:] == (1, 1, 1)):
            return gamma
        if gamma.dim() == 1 and gamma.shape[0] in (1, z.shape[0]):
            return gamma.view(-1, 1, 1, 1)
        raise InvalidArgumentError(
            f"gamma must be a float, a 0-dim tensor or one value per sample (shape ({z.shape[0]},)), "
            f"got shape {tuple(gamma.shape)}"
        )

    # ---- config -------------------------------------------------------------------------------

    def _config_args(self) -> dict[str, Any]:
        """Mask values are not in the config (they are in the state_dict), only its shape, and
        for a network trained on mask crops the mask file and crop size."""
        args: dict[str, Any] = {
            "step": self.step,
            "bands": self.bands,
            "mask_shape": [self.height, self.width],
            "learnable_mask": self.learnable_mask,
        }
        if self.mask_file is not None:
            args["mask_file"] = self.mask_file
        if self.crop is not None:
            args["crop"] = self.crop
        return args

    @classmethod
    def from_config(cls, kwargs: dict[str, Any]) -> CASSI:
        """Build with an all-zero mask of the configured shape; ``load_state_dict`` fills it in.
        ``crop`` is kept as a record only: the full mask it was drawn from is not saved."""
        kwargs = dict(kwargs)
        shape, crop = kwargs.pop("mask_shape", None), kwargs.pop("crop", None)
        if (
            not isinstance(shape, (list, tuple))
            or len(shape) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)
        ):
            raise InvalidArgumentError(f"CASSI config needs mask_shape = [H, W] of positive ints, got {shape!r}")
        op = cls(torch.zeros(shape), **kwargs)
        op.crop = None if crop is None else check_int(crop, "crop", 1)
        return op

    def extra_repr(self) -> str:
        crop = f", crop={self.crop} of {self.mask_file}" if self.crop else ""
        return (
            f"mask={self.height}x{self.width}, step={self.step}, bands={self.bands}, "
            f"learnable_mask={self.learnable_mask}{crop}"
        )


def load_mask(path: str | os.PathLike) -> torch.Tensor:
    """Read a CASSI coded aperture: a MATLAB (v5) ``.mat`` file with key ``'mask'``, or a 2-D ``.npy``.

    Returns a float32 H x W tensor, e.g. the TSA-Net simulation mask (256 x 256, values in
    (0, 1]). ``.mat`` needs scipy. Raises FileNotFoundError if ``path`` is missing and
    ``lorun_peft.errors.CorruptFileError`` if the file is unreadable or has no 2-D ``'mask'``.
    """
    path = os.fspath(path)
    loadmat = None if path.lower().endswith(".npy") else _loadmat()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CASSI mask file not found: {path}")
    if loadmat is None:
        try:
            mask = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise CorruptFileError(f"mask {path} is not a readable .npy file: {err}") from err
    else:
        mask = _read_mat_mask(path, loadmat)
    if mask.ndim != 2 or mask.dtype.kind not in "biuf":
        raise CorruptFileError(f"the mask in {path} must be a 2-D numeric array, got shape {mask.shape} ({mask.dtype})")
    return torch.from_numpy(mask.astype(np.float32))


def _loadmat() -> Any:
    try:
        from scipy.io import loadmat
    except ImportError as err:
        raise ImportError("load_mask needs scipy to read .mat files: pip install scipy") from err
    return loadmat


def _read_mat_mask(path: str, loadmat: Any) -> np.ndarray:
    try:
        content = loadmat(path)
    except NotImplementedError as err:  # MATLAB v7.3 (HDF5) files
        raise CorruptFileError(f"{path} is a MATLAB v7.3 file, which scipy cannot read; save it as v5") from err
    except Exception as err:  # scipy raises ValueError, TypeError, ... on damaged files
        raise CorruptFileError(f"cannot read {path} as a .mat file: {err}") from err
    if "mask" not in content:
        keys = sorted(k for k in content if not k.startswith("__"))
        raise CorruptFileError(f"{path} has no 'mask' variable (it has: {keys})")
    return np.asarray(content["mask"])
