"""Spectral cubes without a spectral dataset, and how to look at them.

KAIST and CAVE could not be obtained here, so CASSI training data is *generated* from gray
photographs (Train400): :func:`cube_from_image` keeps the photograph's spatial structure in every
band and gives each region a smooth reflectance spectrum, a mix of a few random "materials" whose
weights follow the photograph's grey levels and a slowly varying random field, times the
photograph's shading and a smooth random illuminant. :class:`GeneratedCubes` serves such cubes as
a training set (a new cube for every patch) and deterministic held-out cubes (``full``).

What the generator does not have (its limits, so read results on it accordingly): the spectra are
a parametric family (a floor, one Gaussian bump and one logistic edge per material), not measured
reflectances; colour is not related to the photograph's content (grass is not green); there are
no specularities, fluorescence, shadows of another colour or narrow-band lights; spatial detail
is the same in all bands up to the material weights. Real scenes differ in all of these.

:func:`render_rgb` turns a cube into an sRGB image through a CIE 1931 colour-matching
approximation (Wyman, Sloan and Shirley 2013) at the band centres; :func:`sam` is the spectral
angle; :func:`scale_real_measurement` puts a real TSA-Net snapshot on the training scale.

>>> import torch
>>> cube = cube_from_image(torch.rand(1, 16, 16), generator=torch.Generator().manual_seed(0))
>>> tuple(cube.shape), bool(cube.min() >= 0), bool(cube.max() <= 1)
((28, 16, 16), True, True)
>>> tuple(render_rgb(cube).shape)
(3, 16, 16)
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .images import ImageFolder, augment, random_crop
from ..errors import InvalidArgumentError

__all__ = [
    "BAND_CENTRES",
    "GeneratedCubes",
    "colour_matching",
    "cube_from_image",
    "random_spectra",
    "render_rgb",
    "sam",
    "scale_real_measurement",
    "wavelength_rgb",
]

# Centre wavelengths (nm) of the 28 bands of the TSA-Net / MST / DAUHST CASSI systems (KAIST, CAVE, real data).
BAND_CENTRES = (
    453.5, 457.5, 462.0, 466.0, 471.5, 476.5, 481.5, 487.0, 492.5, 498.0, 504.0, 510.0, 516.0, 522.5,
    529.5, 536.5, 544.0, 551.5, 558.5, 567.5, 575.5, 584.5, 594.5, 604.0, 614.5, 625.0, 636.5, 648.5,
)


def _wavelengths(wavelengths: Sequence[float] | None, bands: int | None = None) -> torch.Tensor:
    values = torch.tensor(BAND_CENTRES if wavelengths is None else wavelengths, dtype=torch.float32)
    if values.dim() != 1 or len(values) == 0:
        raise InvalidArgumentError(f"wavelengths must be a non-empty list of numbers, got {wavelengths!r}")
    if bands is not None and len(values) != bands:
        raise InvalidArgumentError(f"the cube has {bands} bands but {len(values)} wavelengths were given")
    return values


# ------------------------------------------------------------------------------ the generator
def random_spectra(n: int, wavelengths: Sequence[float] | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` smooth reflectance spectra (n x bands, max 1 each): a floor, a Gaussian bump and a
    rising or falling logistic edge, with random heights, positions and widths.

    >>> s = random_spectra(3, generator=torch.Generator().manual_seed(0))
    >>> tuple(s.shape), bool((s.amax(1) - 1).abs().max() < 1e-6)
    ((3, 28), True)
    """
    t = (_wavelengths(wavelengths) - 450.0) / 200.0  # about 0..1 over 450-650 nm

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(n, *shape, generator=generator)

    floor = 0.05 + 0.3 * rand(1)
    bump = rand(1) * torch.exp(-0.5 * ((t - (1.2 * rand(1) - 0.1)) / (0.06 + 0.3 * rand(1))) ** 2)
    sign = torch.where(rand(1) < 0.5, -1.0, 1.0)
    edge = rand(1) * torch.sigmoid(sign * (t - rand(1)) / (0.02 + 0.1 * rand(1)))
    spectra = floor + bump + edge
    return spectra / spectra.amax(dim=1, keepdim=True)


def _smooth_field(count: int, height: int, width: int, generator: torch.Generator | None) -> torch.Tensor:
    """``count`` random fields varying over about a quarter of the image (count x H x W, std ~1)."""
    coarse = torch.randn(1, count, 4, 4, generator=generator)
    return F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)[0]


def cube_from_image(
    image: torch.Tensor,
    wavelengths: Sequence[float] | None = None,
    generator: torch.Generator | None = None,
    materials: int = 4,
) -> torch.Tensor:
    """A bands x H x W cube in [0, 1] with the spatial structure of a gray ``image`` (1 x H x W in [0, 1]).

    ``materials`` random spectra (:func:`random_spectra`) are mixed per pixel with softmax weights
    that follow the (blurred) grey level and a smooth random field, so regions of the photograph
    get different, smoothly varying spectra; the result is multiplied by the photograph itself
    (shading and texture in every band) and by a smooth random illuminant.
    """
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] != 1:
        raise InvalidArgumentError(f"image must be a 1 x H x W gray tensor, got {getattr(image, 'shape', type(image).__name__)}")
    _, h, w = image.shape
    image = image.float().clamp(0, 1)
    spectra = random_spectra(materials, wavelengths, generator)  # M x B
    levels = torch.rand(materials, 1, 1, generator=generator)
    blurred = F.avg_pool2d(image[None], 5, stride=1, padding=2, count_include_pad=False)[0]
    logits = -((blurred - levels) ** 2) / (2 * 0.12**2) + 1.5 * _smooth_field(materials, h, w, generator)
    weights = torch.softmax(logits, dim=0)  # M x H x W
    t = (_wavelengths(wavelengths) - 450.0) / 200.0
    light = 1 + (torch.rand(1, generator=generator) - 0.5) * (t - 0.5)  # a slight warm or cool tilt
    reflectance = torch.einsum("mb,mhw->bhw", spectra * light, weights)
    return (reflectance / light.max() * image).clamp(0, 1)


class GeneratedCubes(Dataset):
    """Spectral cubes generated from gray photographs (see the module docstring for how, and its limits).

    Args:
        images: a folder or list of image files (read as gray), or a list of 1 x H x W tensors.
        patch_size: training items are ``patch_size`` crops (cut from the photograph first, then
            turned into a new random cube each time); None: whole images.
        wavelengths: band centres in nm (default the 28 TSA-Net bands).
        augment: random flips and 90-degree rotations of the photograph.
        seed: ``full(i)`` is the cube of image i generated with seed ``seed + i``: the same held-out
            cubes every time.

    >>> data = GeneratedCubes([torch.rand(1, 40, 40)], patch_size=16)
    >>> tuple(data.random_item(0, torch.Generator().manual_seed(1)).shape), tuple(data.full(0).shape)
    ((28, 16, 16), (28, 40, 40))
    """

    def __init__(self, images: str | os.PathLike | Sequence[str | os.PathLike] | Sequence[torch.Tensor],
                 patch_size: int | None = None, wavelengths: Sequence[float] | None = None, augment: bool = True,
                 seed: int = 0, materials: int = 4) -> None:
        if isinstance(images, (list, tuple)) and images and all(isinstance(x, torch.Tensor) for x in images):
            self.items, self.names = list(images), [f"image_{i}" for i in range(len(images))]
        else:
            folder = ImageFolder(images, channels=1, augment=False)  # type: ignore[arg-type]
            self.items, self.names = folder.items, folder.names
        if patch_size is not None and any(min(x.shape[-2:]) < patch_size for x in self.items):
            raise InvalidArgumentError(f"an image is smaller than patch_size {patch_size}")
        self.patch_size, self.augment, self.seed, self.materials = patch_size, augment, seed, materials
        self.wavelengths = tuple(float(v) for v in _wavelengths(wavelengths))
        self.bands = len(self.wavelengths)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.random_item(index, None)

    def random_item(self, index: int, generator: torch.Generator | None) -> torch.Tensor:
        """A random crop of image ``index`` made into a new random cube, all drawn from ``generator``."""
        x = self.items[index]
        if self.patch_size is not None:
            x = random_crop(x, self.patch_size, generator)
        if self.augment:
            x = augment(x, generator)
        return cube_from_image(x.contiguous(), self.wavelengths, generator, self.materials)

    def full(self, index: int) -> torch.Tensor:
        """The held-out cube of the whole image ``index`` (seed ``seed + index``)."""
        generator = torch.Generator().manual_seed(self.seed + index)
        return cube_from_image(self.items[index], self.wavelengths, generator, self.materials)


# ------------------------------------------------------------------------------ looking at cubes
def _lobe(wl: torch.Tensor, mean: float, left: float, right: float) -> torch.Tensor:
    return torch.exp(-0.5 * ((wl - mean) / torch.where(wl < mean, left, right)) ** 2)


def colour_matching(wavelengths: Sequence[float] | None = None) -> torch.Tensor:
    """CIE 1931 2-degree colour-matching functions x, y, z at ``wavelengths`` (3 x bands), from the
    multi-lobe Gaussian fit of Wyman, Sloan and Shirley (JCGT 2013)."""
    wl = _wavelengths(wavelengths)
    x = 1.056 * _lobe(wl, 599.8, 37.9, 31.0) + 0.362 * _lobe(wl, 442.0, 16.0, 26.7) - 0.065 * _lobe(wl, 501.1, 20.4, 26.2)
    y = 0.821 * _lobe(wl, 568.8, 46.9, 40.5) + 0.286 * _lobe(wl, 530.9, 16.3, 31.1)
    z = 1.217 * _lobe(wl, 437.0, 11.8, 36.0) + 0.681 * _lobe(wl, 459.0, 26.0, 13.8)
    return torch.stack([x, y, z])


_XYZ_TO_SRGB = torch.tensor([[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]])


def _srgb_gamma(linear: torch.Tensor) -> torch.Tensor:
    linear = linear.clamp(0, 1)
    return torch.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear.clamp_min(1e-12) ** (1 / 2.4) - 0.055)


def render_rgb(cube: torch.Tensor, wavelengths: Sequence[float] | None = None, exposure: float | None = None) -> torch.Tensor:
    """An sRGB rendering (3 x H x W in [0, 1]) of a bands x H x W cube.

    The bands are projected on the CIE colour-matching functions at their centres, converted to
    linear sRGB and white-balanced so that a flat spectrum is grey; the bands cover only
    453.5-648.5 nm, so deep blues and reds are missing. ``exposure`` scales the linear values
    (None: the 99th percentile of the brightest channel becomes 1), then the sRGB curve applies.
    """
    if not isinstance(cube, torch.Tensor) or cube.dim() != 3:
        raise InvalidArgumentError(f"cube must be a bands x H x W tensor, got {getattr(cube, 'shape', type(cube).__name__)}")
    cmf = colour_matching(_wavelengths(wavelengths, cube.shape[0]).tolist())
    to_rgb = _XYZ_TO_SRGB @ cmf  # 3 x B
    white = to_rgb.sum(dim=1)  # a flat spectrum of 1
    linear = torch.einsum("cb,bhw->chw", to_rgb / white[:, None], cube.detach().float().cpu().clamp_min(0))
    if exposure is None:
        level = torch.quantile(linear.amax(0).flatten()[:: max(1, linear[0].numel() // 200_000)], 0.99)
        exposure = 1.0 / max(float(level), 1e-6)
    return _srgb_gamma(linear * exposure)


def wavelength_rgb(wavelength: float) -> tuple[int, int, int]:
    """The display colour (8-bit sRGB, brightest channel 255) of light of one ``wavelength`` in nm,
    for tinting a single band."""
    rgb = (_XYZ_TO_SRGB @ colour_matching([wavelength]))[:, 0].clamp_min(0)
    rgb = _srgb_gamma(rgb / rgb.max().clamp_min(1e-6))
    return tuple(round(255 * float(v)) for v in rgb)  # type: ignore[return-value]


def sam(estimate: torch.Tensor, reference: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Spectral angle mapper in degrees per cube (shape N): the mean over pixels of the angle
    between the estimated and true spectra of N x B x H x W cubes.

    >>> x = torch.rand(2, 28, 8, 8)
    >>> bool(sam(2 * x, x).max() < 1e-3), bool(sam(x.flip(1), x).min() > 1)
    (True, True)
    """
    if estimate.shape != reference.shape or estimate.dim() != 4:
        raise InvalidArgumentError(f"sam needs two N x B x H x W cubes of one shape, got {tuple(estimate.shape)} and {tuple(reference.shape)}")
    estimate, reference = estimate.double(), reference.double()  # acos near 1 needs the precision
    dot = (estimate * reference).sum(1)
    norms = estimate.norm(dim=1) * reference.norm(dim=1)
    cosine = (dot / norms.clamp_min(eps)).clamp(-1, 1)
    return torch.rad2deg(torch.acos(cosine)).flatten(1).mean(1).float()


def scale_real_measurement(meas: torch.Tensor, bands: int = 28, peak: float = 0.8) -> torch.Tensor:
    """A real snapshot on the scale this library's CASSI training simulates.

    TSA-Net's and MST's real-data test code clips the measurement to [0, 1] and scales it to
    ``meas / meas.max() * 0.8``; their networks train on simulated snapshots divided by
    ``bands / 2`` (``sum_k shift_k(mask * x_k) / 28 * 2``). :class:`~lorun_peft.operators.CASSI`
    does not divide, so the same scaling here is ``meas / meas.max() * 0.8 * bands / 2``.

    >>> round(float(scale_real_measurement(torch.tensor([[0.0, 0.5]])).max()), 4)
    11.2
    """
    meas = meas.float().clamp(0, 1)
    return meas / meas.max().clamp_min(1e-12) * peak * bands / 2
