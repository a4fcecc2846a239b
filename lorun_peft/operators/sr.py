"""Super-resolution degradation: a circular blur with a fixed kernel, then s-fold decimation.

``y = S (k * x)``: every channel of ``x`` (N, C, H, W) is circularly convolved with the same
kernel ``k``, then every ``s``-th pixel is kept, starting at pixel (0, 0), so ``y`` is
(N, C, H / s, W / s). Conventions (tests pin each one):

- The kernel is normalised to sum 1. Its centre is at index ``(kh // 2, kw // 2)`` (for an even
  size that is the lower of the two middle pixels): a unit impulse at pixel (i, j) blurs into a
  copy of the kernel whose centre sits on (i, j), wrapping around the borders.
- H and W must be divisible by ``s`` (``A`` and ``prox_l2`` raise ``InvalidArgumentError``
  otherwise): the closed-form prox needs it, and silently cropping would hide a shape mistake.
- An image smaller than the kernel is fine: the kernel wraps around the image (the circular
  convolution is still exact, the taps that overlap simply add up).

Everything is done with FFTs on the last two dimensions, so any batch and channel count works.
``prox_l2`` is the closed form of Zhao et al. 2016 (the USRNet data step), derived below.

>>> import torch
>>> op = BlurDownsample(torch.ones(3, 3), scale=2)
>>> y = op.A(torch.rand(2, 3, 8, 8))
>>> y.shape, op.A_adjoint(y).shape, op.initial_estimate(y).shape
(torch.Size([2, 3, 4, 4]), torch.Size([2, 3, 8, 8]), torch.Size([2, 3, 8, 8]))
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch

from ..errors import InvalidArgumentError
from .base import LinearOperator, register_operator

__all__ = ["BlurDownsample", "centred_psf", "cached_spectrum"]


def _check_scale(scale: Any) -> int:
    """``scale`` as an int >= 2 (an integral float such as 2.0 is accepted)."""
    ok = isinstance(scale, (int, float, np.integer, np.floating)) and not isinstance(scale, bool)
    if not ok or not math.isfinite(float(scale)) or not float(scale).is_integer() or scale < 2:
        raise InvalidArgumentError(f"scale must be an integer >= 2, got {scale!r}")
    return int(scale)


def _check_channels(channels: Any) -> int | None:
    if channels is None:
        return None
    if isinstance(channels, bool) or not isinstance(channels, (int, np.integer)) or channels < 1:
        raise InvalidArgumentError(f"channels must be None or a positive integer, got {channels!r}")
    return int(channels)


def _check_kernel(kernel: Any) -> torch.Tensor:
    """The kernel as given, as a float64 2-D tensor; raises if it is unusable."""
    if torch.is_tensor(kernel):
        kernel = kernel.detach().to("cpu", torch.float64).numpy()
    try:
        k = torch.from_numpy(np.array(kernel, dtype=np.float64))
    except (TypeError, ValueError) as err:
        raise InvalidArgumentError(f"kernel must be a 2-D array of numbers: {err}") from err
    if k.dim() != 2 or k.numel() == 0:
        raise InvalidArgumentError(f"kernel must be a non-empty 2-D array, got shape {tuple(k.shape)}")
    if not bool(torch.isfinite(k).all()):
        raise InvalidArgumentError("kernel contains NaN or infinite values")
    total = float(k.sum())
    if not total > 0:
        raise InvalidArgumentError(
            f"kernel must sum to a positive value (it is normalised to sum 1), got sum {total:g}"
        )
    return k


def centred_psf(kernel: torch.Tensor, H: int, W: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:  # noqa: N803
    """``kernel`` placed on an H x W grid with its centre (kh // 2, kw // 2) on (0, 0), for circular
    convolution by FFT; a kernel larger than the grid wraps around (its overlapping taps add up)."""
    kernel = kernel.detach().to(device=device, dtype=dtype)
    kh, kw = kernel.shape
    rows = (torch.arange(kh, device=device) - kh // 2) % H
    cols = (torch.arange(kw, device=device) - kw // 2) % W
    psf = kernel.new_zeros(H, W)
    psf.index_put_((rows[:, None], cols[None, :]), kernel, accumulate=True)
    return psf


def cached_spectrum(cache: dict[tuple, dict[str, Any]], kernel: torch.Tensor, key: tuple,
                    build: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """``build()``'s spectra of ``kernel`` (a dict holding at least ``"rotf"``), kept in ``cache``
    under ``key``.

    An entry is reused only for the very same kernel tensor at the same version, so
    ``load_state_dict``, ``.to()`` or an in-place edit of the kernel all rebuild it; entries made
    under ``torch.inference_mode`` are not reused outside it (autograd refuses them). Under
    ``torch.compile`` the spectra are computed in the graph instead (the cache's checks would break
    it, and the compiled graph does not keep Python-side state anyway).
    """
    if torch.compiler.is_compiling():
        return build()
    version = None if kernel.is_inference() else kernel._version
    entry = cache.get(key)
    fresh = (
        entry is not None
        and entry["source"] is kernel
        and entry["version"] == version
        and (torch.is_inference_mode_enabled() or not entry["rotf"].is_inference())
    )
    if not fresh:
        if len(cache) > 8:
            cache.clear()
        entry = {"source": kernel, "version": version, **build()}
        cache[key] = entry
    return entry


def _alias_mean(v: torch.Tensor, s: int) -> torch.Tensor:
    """Mean over the s*s aliases of a full (.., H, W) spectrum: (.., H/s, W/s).

    Index k of a length-H axis is ``a * (H/s) + k'``, so a (s, H/s) reshape puts aliases on ``a``.
    """
    H, W = v.shape[-2:]
    v = v.reshape(*v.shape[:-2], s, H // s, s, W // s)
    return v.mean(dim=(-4, -2))


def _tile(v: torch.Tensor, s: int) -> torch.Tensor:
    """Repeat a (.., h, w) spectrum s times along each of the last two axes: (.., s*h, s*w).

    Tiled as real and imaginary parts: ONNX export (``lorun_peft.export``) converts complex FFTs
    but not a ``repeat`` of a complex tensor."""
    pairs = torch.view_as_real(v)
    return torch.view_as_complex(pairs.repeat(*([1] * (v.dim() - 2)), s, s, 1))


@register_operator
class BlurDownsample(LinearOperator):
    """Blur with a fixed kernel (circular), then keep every ``scale``-th pixel.

    Args:
        kernel: 2-D tensor, array or nested list, odd or even size, summing to a positive value;
            it is normalised to sum 1 (one already within 1e-6 of 1 is kept as it is) and kept,
            in the default dtype, as the non-learnable buffer ``kernel`` (in the state dict too).
            ``config()`` lists the current kernel, so config alone rebuilds the same operator.
        scale: integer decimation factor, at least 2.
        channels: if given, inputs must have this many channels (dimension -3); by default any.

    ``initial_estimate(y)`` is cubic (Keys, a = -0.5) interpolation of ``y`` on the decimation
    grid, with circular borders: it keeps every measured pixel (x0[..., ::s, ::s] == y) and is
    much closer to the image than ``A_adjoint(y)``, which is mostly zeros.

    >>> import torch
    >>> from lorun_peft.operators.base import operator_from_config
    >>> op = BlurDownsample(torch.rand(5, 5), scale=3, channels=1)
    >>> twin = operator_from_config(op.config())
    >>> x = torch.rand(1, 1, 9, 12)
    >>> torch.equal(op.A(x), twin.A(x))
    True
    """

    def __init__(self, kernel: Any, scale: int, channels: int | None = None) -> None:
        super().__init__()
        self.scale = _check_scale(scale)
        self.channels = _check_channels(channels)
        kernel = _check_kernel(kernel)
        total = float(kernel.sum())
        if abs(total - 1.0) > 1e-6:  # one that already sums to 1 is kept bit for bit (config round trips)
            kernel = kernel / total
        self.register_buffer("kernel", kernel.to(torch.get_default_dtype()))
        self._spectra: dict[tuple, dict[str, Any]] = {}

    # ----------------------------------------------------------------- checks and cached spectra
    def _check_divisible(self, x: torch.Tensor, name: str = "x") -> None:
        self._check_image(x, name)
        H, W = x.shape[-2:]
        if H % self.scale or W % self.scale:
            raise InvalidArgumentError(
                f"{name} height and width must be divisible by scale={self.scale}, got {H}x{W}; "
                "crop or pad the image first"
            )

    @staticmethod
    def _work_dtype(x: torch.Tensor) -> torch.dtype:
        return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32

    def _spectrum(self, H: int, W: int, dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
        """The kernel's transfer function on an H x W grid, and what the prox needs (cached: see
        :func:`cached_spectrum`)."""
        return cached_spectrum(self._spectra, self.kernel, (H, W, dtype, device),
                               lambda: self._build_spectrum(H, W, dtype, device))

    def _build_spectrum(self, H: int, W: int, dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
        otf = torch.fft.fft2(centred_psf(self.kernel, H, W, dtype, device))
        spectra = {"rotf": otf[:, : W // 2 + 1].contiguous()}
        s = self.scale
        if H % s == 0 and W % s == 0:
            spectra["aat"] = _alias_mean(otf.abs().square(), s)  # A A^T on the small grid
        return spectra

    def _cubic_spectrum(self, H: int, W: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """DFT of the separable circular cubic interpolation kernel for upsampling by ``scale``."""
        s = self.scale

        def axis(n: int) -> torch.Tensor:
            t = torch.arange(-2 * s + 1, 2 * s, device=device, dtype=torch.float64)
            d = (t / s).abs()
            a = -0.5  # Keys' cubic (MATLAB's imresize)
            w = torch.where(
                d <= 1,
                (a + 2) * d**3 - (a + 3) * d**2 + 1,
                a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a,
            )
            taps = torch.zeros(n, device=device, dtype=torch.float64)
            taps.index_add_(0, t.long() % n, w)
            return torch.fft.fft(taps).real  # symmetric kernel: real spectrum

        return (axis(H)[:, None] * axis(W)[None, :]).to(dtype)

    # ----------------------------------------------------------------- the operator
    def blur(self, x: torch.Tensor) -> torch.Tensor:
        """The circular convolution ``k * x`` alone (no decimation); any H and W."""
        self._check_image(x)
        dtype = self._work_dtype(x)
        H, W = x.shape[-2:]
        rotf = self._spectrum(H, W, dtype, x.device)["rotf"]
        out = torch.fft.irfft2(torch.fft.rfft2(x.to(dtype)) * rotf, s=(H, W))
        return out.to(x.dtype)

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """y = S (k * x), shape (.., H/s, W/s)."""
        self._check_divisible(x)
        s = self.scale
        return self.blur(x)[..., ::s, ::s]

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """x = k (correlated) S^T y: zero insertion up to (.., s*h, s*w), then circular correlation."""
        self._check_image(y, "y")
        dtype = self._work_dtype(y)
        return self._adjoint_of_spectrum(torch.fft.fft2(y.to(dtype))).to(y.dtype)

    def _adjoint_of_spectrum(self, fy: torch.Tensor) -> torch.Tensor:
        """A^T y from fy = fft2(y): zero insertion tiles the spectrum s x s times."""
        s = self.scale
        H, W = fy.shape[-2] * s, fy.shape[-1] * s
        rotf = self._spectrum(H, W, fy.real.dtype, fy.device)["rotf"]
        return torch.fft.irfft2(_tile(fy, s)[..., : W // 2 + 1] * rotf.conj(), s=(H, W))

    def prox_l2(self, z: torch.Tensor, y: torch.Tensor, gamma: float | torch.Tensor) -> torch.Tensor:
        """argmin_x gamma/2 ||A x - y||^2 + 1/2 ||x - z||^2, in closed form with FFTs.

        ``gamma``: a float, a 0-dim tensor (gradients flow into it), or one value per sample (N,).

        Derivation. The minimiser solves (I + gamma A^T A) x = z + gamma A^T y; the push-through
        identity rewrites its solution on the small grid:
            x = z + gamma A^T (I + gamma A A^T)^-1 (y - A z).
        A A^T = S K K^H S^T is circulant on the (H/s, W/s) grid: zero insertion S^T tiles a
        spectrum s x s times, and decimation S averages its s*s aliases V[k + a H/s, l + b W/s].
        So in the small grid's Fourier domain A A^T multiplies by P = mean over aliases of |K|^2
        (K the kernel's transfer function), and the inverse is one division by 1 + gamma P.
        This is the same solution as Zhao et al. 2016 (the USRNet data step), written on the
        small grid: two image-size FFTs for A z, one for A^T.
        """
        self._check_divisible(z, "z")
        s = self.scale
        H, W = z.shape[-2:]
        if not torch.is_tensor(y) or y.shape[-2:] != (H // s, W // s):
            got = tuple(y.shape) if torch.is_tensor(y) else type(y).__name__
            raise InvalidArgumentError(
                f"y must be shaped (.., {H // s}, {W // s}) to match z {tuple(z.shape)}, got {got}"
            )
        dtype = self._work_dtype(z)
        g = self._gamma_like(gamma, z, dtype)
        power = self._spectrum(H, W, dtype, z.device)["aat"]  # eigenvalues of A A^T, (H/s, W/s)
        residual = torch.fft.fft2(y.to(dtype) - self.A(z.to(dtype)))
        x = z.to(dtype) + g * self._adjoint_of_spectrum(residual / (1 + g * power))
        return x.to(z.dtype)

    @staticmethod
    def _gamma_like(gamma: float | torch.Tensor, z: torch.Tensor, dtype: torch.dtype) -> float | torch.Tensor:
        """gamma as a float or a tensor that broadcasts per sample against z."""
        if not torch.is_tensor(gamma):
            return float(gamma)
        g = gamma.to(device=z.device, dtype=dtype)
        if g.dim() == 0 or (g.dim() == z.dim() and g.shape[-2:] == (1, 1)):
            return g
        if g.dim() == 1 and g.numel() in (1, z.shape[0]):
            return g.reshape(-1, *([1] * (z.dim() - 1)))
        raise InvalidArgumentError(
            f"gamma must be a float, a 0-dim tensor or one value per sample ({z.shape[0]},), "
            f"got shape {tuple(g.shape)}"
        )

    def initial_estimate(self, y: torch.Tensor) -> torch.Tensor:
        """Cubic interpolation of y onto the image grid (circular borders); keeps y's pixels."""
        self._check_image(y, "y")
        s = self.scale
        dtype = self._work_dtype(y)
        H, W = y.shape[-2] * s, y.shape[-1] * s
        cubic = self._cubic_spectrum(H, W, dtype, y.device)
        spectrum = _tile(torch.fft.fft2(y.to(dtype)), s) * cubic
        x0 = torch.fft.irfft2(spectrum[..., : W // 2 + 1], s=(H, W))
        return x0.to(y.dtype)

    # ----------------------------------------------------------------- config
    def _config_args(self) -> dict[str, Any]:
        kernel = self.kernel.detach().to("cpu", torch.float64).tolist()  # the current kernel, exactly
        return {"kernel": kernel, "scale": self.scale, "channels": self.channels}

    def extra_repr(self) -> str:
        kh, kw = self.kernel.shape
        return f"scale={self.scale}, kernel={kh}x{kw}, channels={self.channels}"
