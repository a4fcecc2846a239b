"""Deblurring with a known kernel: ``y = k * x``, a circular convolution of every channel.

The conventions are :class:`~lorun_peft.operators.sr.BlurDownsample`'s without the decimation:
the kernel's centre is its pixel ``(kh // 2, kw // 2)``, FFTs run on the last two dimensions (any
batch, any channel count, any image size; a kernel larger than the image wraps around it), and
the spectra are tensors the ONNX exporter converts (``rfft2``/``irfft2`` with complex products
and quotients by real tensors only, as SR's data step), so networks over ``Blur`` export.

The kernel is checked, never normalised behind the user's back: its entries must be >= 0 and
sum to 1 within ``1e-3`` (such a kernel is kept as given); ``normalize=True`` divides a kernel
of any positive sum by its sum instead.

>>> import torch
>>> op = Blur(torch.full((3, 3), 1 / 9))
>>> x = torch.rand(2, 3, 16, 15)
>>> y = op.A(x)
>>> y.shape, op.prox_l2(x, y, 0.5).shape, torch.equal(op.initial_estimate(y), y)
(torch.Size([2, 3, 16, 15]), torch.Size([2, 3, 16, 15]), True)
>>> Blur([[1.0, 2.0, 1.0]], normalize=True).kernel
tensor([[0.2500, 0.5000, 0.2500]])
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import InvalidArgumentError
from .base import LinearOperator, register_operator
from .sr import BlurDownsample, _check_channels, cached_spectrum, centred_psf

__all__ = ["Blur", "check_blur_kernel", "KERNEL_SUM_TOLERANCE"]

KERNEL_SUM_TOLERANCE = 1e-3  # how far from 1 the sum of a kernel given with normalize=False may be

_gamma_like = BlurDownsample._gamma_like  # gamma as a float or a per-sample tensor (SR's rules)
_work_dtype = BlurDownsample._work_dtype  # float32 or float64: the FFTs' dtype


def check_blur_kernel(kernel: Any, normalize: bool = False) -> torch.Tensor:
    """``kernel`` as a float64 2-D tensor, refused with a message for each way it can be wrong.

    >>> check_blur_kernel([[0.5, 0.6]])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    lorun_peft.errors.InvalidArgumentError: kernel sums to 1.1, not 1 (within 0.001); divide it by its sum or ...
    """
    if not isinstance(normalize, bool):
        raise InvalidArgumentError(f"normalize must be True or False, got {normalize!r}")
    if torch.is_tensor(kernel):
        kernel = kernel.detach().to("cpu", torch.float64).numpy()
    try:
        k = np.array(kernel, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InvalidArgumentError(
            f"kernel must be a 2-D array of numbers (kh x kw), got {type(kernel).__name__}: {err}"
        ) from err
    if k.ndim != 2:
        raise InvalidArgumentError(
            f"kernel must be 2-D (kh x kw), got {k.ndim} dimension(s), shape {k.shape}; "
            "for a separable blur pass the outer product np.outer(k, k)"
        )
    if k.size == 0:
        raise InvalidArgumentError(
            f"kernel is empty (shape {k.shape}); give at least one tap, e.g. [[1.0]] for no blur"
        )
    bad = np.argwhere(~np.isfinite(k))
    if len(bad):
        row, col = bad[0]
        raise InvalidArgumentError(f"kernel holds a non-finite value {k[row, col]} at (row {row}, column {col})")
    negative = np.argwhere(k < 0)
    if len(negative):
        row, col = negative[0]
        raise InvalidArgumentError(
            f"kernel holds a negative entry {k[row, col]:g} at (row {row}, column {col}); "
            "a blur kernel's entries are >= 0"
        )
    total = float(k.sum())
    if normalize:
        if not total > 0:
            raise InvalidArgumentError("kernel sums to 0 and cannot be normalised; give a kernel with a positive entry")
        k = k / total
    elif abs(total - 1.0) > KERNEL_SUM_TOLERANCE:
        raise InvalidArgumentError(
            f"kernel sums to {total:.6g}, not 1 (within {KERNEL_SUM_TOLERANCE:g}); "
            "divide it by its sum or pass normalize=True"
        )
    return torch.from_numpy(k)


@register_operator
class Blur(LinearOperator):
    """Circular blur with a known kernel: ``A x = k * x`` per channel; ``A^T`` correlates with k.

    Args:
        kernel: 2-D tensor, array or nested list (odd or even size), entries >= 0, summing to 1
            within ``KERNEL_SUM_TOLERANCE`` (kept as given), or to any positive value with
            ``normalize=True`` (divided by its sum). Kept, in the default dtype, as the buffer
            ``kernel`` (in the state dict); ``config()`` lists it, so config alone rebuilds the operator.
        channels: if given, inputs must have this many channels (dimension -3); by default any.
        normalize: divide the kernel by its sum (see above).

    ``prox_l2`` is exact (one division in the Fourier domain). ``initial_estimate(y)`` is ``y``
    itself: a blurred image is already close to the image, and any inverse filter would need the
    noise level to avoid amplifying noise, which the data steps handle.

    >>> from lorun_peft.operators.base import operator_from_config
    >>> op = Blur(torch.rand(4, 6), normalize=True, channels=1)
    >>> x = torch.rand(1, 1, 9, 12)
    >>> torch.equal(op.A(x), operator_from_config(op.config()).A(x))
    True
    """

    def __init__(self, kernel: Any, channels: int | None = None, *, normalize: bool = False) -> None:
        super().__init__()
        self.channels = _check_channels(channels)
        self.register_buffer("kernel", check_blur_kernel(kernel, normalize).to(torch.get_default_dtype()))
        self._otfs: dict[tuple, dict[str, Any]] = {}

    def _otf(self, H: int, W: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:  # noqa: N803
        """The kernel's transfer function on an H x W grid (rfft2 half), cached as BlurDownsample's."""
        return cached_spectrum(self._otfs, self.kernel, (H, W, dtype, device),
                               lambda: {"rotf": torch.fft.rfft2(centred_psf(self.kernel, H, W, dtype, device))})["rotf"]

    def _filter(self, x: torch.Tensor, adjoint: bool) -> torch.Tensor:
        dtype = _work_dtype(x)
        H, W = x.shape[-2:]
        otf = self._otf(H, W, dtype, x.device)
        spectrum = torch.fft.rfft2(x.to(dtype)) * (otf.conj() if adjoint else otf)
        return torch.fft.irfft2(spectrum, s=(H, W)).to(x.dtype)

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """y = k * x (circular), the shape of x."""
        self._check_image(x)
        return self._filter(x, adjoint=False)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """x = k (correlated) y: the flipped kernel, circularly."""
        self._check_image(y, "y")
        return self._filter(y, adjoint=True)

    def prox_l2(self, z: torch.Tensor, y: torch.Tensor, gamma: float | torch.Tensor) -> torch.Tensor:
        """argmin_x gamma/2 ||k * x - y||^2 + 1/2 ||x - z||^2 in closed form.

        A is diagonal in the Fourier domain (transfer function K), so (I + gamma A^T A) x =
        z + gamma A^T y is solved per frequency; written as a correction of z,
        x = z + gamma F^-1[conj(K) (Y - K Z) / (1 + gamma |K|^2)].
        ``gamma``: a float, a 0-dim tensor (gradients flow into it) or one value per sample (N,).
        """
        self._check_image(z, "z")
        if not torch.is_tensor(y) or y.shape[-2:] != z.shape[-2:]:
            got = tuple(y.shape) if torch.is_tensor(y) else type(y).__name__
            raise InvalidArgumentError(f"y must be shaped like z {tuple(z.shape)}, got {got}")
        dtype = _work_dtype(z)
        H, W = z.shape[-2:]
        g = _gamma_like(gamma, z, dtype)
        otf = self._otf(H, W, dtype, z.device)
        zz = z.to(dtype)
        residual = torch.fft.rfft2(y.to(dtype)) - otf * torch.fft.rfft2(zz)
        correction = torch.fft.irfft2(otf.conj() * residual / (1 + g * otf.abs().square()), s=(H, W))
        return (zz + g * correction).to(z.dtype)

    def initial_estimate(self, y: torch.Tensor) -> torch.Tensor:
        """``y`` itself (see the class docstring)."""
        self._check_image(y, "y")
        return y

    def _config_args(self) -> dict[str, Any]:
        return {"kernel": self.kernel.detach().to("cpu", torch.float64).tolist(), "channels": self.channels}

    def extra_repr(self) -> str:
        kh, kw = self.kernel.shape
        return f"kernel={kh}x{kw}, channels={self.channels}"
