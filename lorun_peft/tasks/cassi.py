"""CASSI, coded-aperture snapshot spectral imaging: a cube of bands through one coded mask,
dispersed and summed into a 2-D snapshot. Its images are cubes (.npy/.mat) or cubes generated from
photographs (:mod:`lorun_peft.data.spectral`), of the mask's size.

>>> import argparse
>>> op = SpectralSnapshot().make_operator(argparse.Namespace(mask=None, bands=4, dispersion=2, patch=16, seed=0), 4)
>>> type(op).__name__, SpectralSnapshot().channels(op)
('CASSI', 4)
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

from ..errors import InvalidArgumentError
from .base import Option, Task, register_task

__all__ = ["SpectralSnapshot", "generated_cubes", "holds_cubes"]


def generated_cubes(images: Any, bands: int, **options: Any) -> Any:
    """:class:`lorun_peft.data.spectral.GeneratedCubes` of ``images`` with ``bands`` bands (the 28
    TSA-Net band centres, or ``bands`` equally spaced over 453.5-648.5 nm)."""
    import torch

    from ..data.spectral import BAND_CENTRES, GeneratedCubes

    wavelengths = BAND_CENTRES if bands == len(BAND_CENTRES) else torch.linspace(453.5, 648.5, bands).tolist()
    return GeneratedCubes(images, wavelengths=wavelengths, **options)


def holds_cubes(folder: Path | list[Path]) -> bool:
    """Whether a data folder (or file list) holds cubes; else its images make generated cubes."""
    from ..data.images import CUBE_SUFFIXES

    if isinstance(folder, list):
        return any(Path(f).suffix.lower() in CUBE_SUFFIXES for f in folder)
    folder = Path(folder)
    return not folder.is_dir() or any(f.suffix.lower() in CUBE_SUFFIXES for f in folder.iterdir())


def _recorded(path: Path) -> str:
    """How a mask file is named in the saved network: as given when relative, else its folder and
    name only (an absolute path would carry the user's directories into bundles pushed to the Hub)."""
    return path.as_posix() if not path.is_absolute() else Path(*path.parts[-2:]).as_posix()


@register_task
class SpectralSnapshot(Task):
    name = "cassi"
    summary = "spectral snapshot (CASSI): a cube through a coded mask, dispersed and summed"
    operator_types = ("CASSI",)
    simulates_files = False
    builtin_name = "cube"
    colour = "none"
    options = (
        Option("--mask", "coded aperture, .mat (key 'mask') or .npy (default a random binary mask)", type=Path),
        Option("--bands", "spectral bands (default 28)", type=int, default=28),
        Option("--dispersion", "shift per band in pixels (default 2)", type=int, default=2),
    )

    def make_operator(self, args: argparse.Namespace, channels: int) -> Any:
        import torch

        from ..operators import CASSI
        from ..operators.cassi import load_mask

        if args.mask is not None:  # train on random crops of a larger mask, as TSA-Net and MST do
            mask = load_mask(args.mask)
            crop = args.patch if max(mask.shape) > args.patch else None
            return CASSI(mask, step=args.dispersion, bands=args.bands, crop=crop, mask_file=_recorded(args.mask), seed=args.seed)
        mask = (torch.rand(args.patch, args.patch, generator=torch.Generator().manual_seed(args.seed)) > 0.5).float()
        return CASSI(mask, step=args.dispersion, bands=args.bands)

    def channels_from_args(self, args: argparse.Namespace) -> int:
        return args.bands

    def channels(self, operator: Any, denoiser_channels: int = 1) -> int:
        return operator.bands

    def use_mask(self, operator: Any, path: Path) -> None:
        from ..operators.cassi import load_mask

        operator.use_mask(load_mask(path))

    def fit_image(self, operator: Any, x: Any) -> Any:
        from ..data.images import center_crop

        return center_crop(x, operator.height, operator.width)

    def training_patch(self, operator: Any, patch: int) -> int:
        return operator.height

    def file_suffixes(self, source: Any) -> tuple[str, ...]:
        from ..data.images import CUBE_SUFFIXES, IMAGE_SUFFIXES

        return CUBE_SUFFIXES if holds_cubes(source) else IMAGE_SUFFIXES

    def image_set(self, source: Any, channels: int, *, patch_size: int | None = None, seed: int = 0) -> Any:
        """The cubes of a folder, or the cubes generated from its photographs."""
        from ..data.images import SpectralCubes

        if not holds_cubes(source):
            if patch_size is None:
                return generated_cubes(source, channels, augment=False, seed=10_000)
            print("cassi: training on spectral cubes generated from the images (lorun_peft.data.spectral)", flush=True)
            return generated_cubes(source, channels, patch_size=patch_size, seed=seed)
        cubes = SpectralCubes(source, augment=False) if patch_size is None else SpectralCubes(source, patch_size=patch_size)
        if cubes.bands != channels:
            raise InvalidArgumentError(f"the cubes of {source} have {cubes.bands} bands, the model {channels}")
        return cubes

    def builtin_images(self, operator: Any, channels: int, n: int, size: int, seed: int, training: bool = False) -> Any:
        """Cubes generated from built-in images: 32 photographs to train on, 2 whole cubes to evaluate."""
        from ..data.images import synthetic_images

        if training:
            return generated_cubes(list(synthetic_images(32, size, seed=seed)), channels, seed=seed)
        photos = list(synthetic_images(2, max(operator.height, operator.width), seed=seed))
        cubes = generated_cubes(photos, channels, augment=False, seed=seed)
        return [cubes.full(i) for i in range(len(cubes))]

    def load_input(self, path: Path, channels: int) -> Any:
        from ..data.images import load_cube

        if Path(path).suffix.lower() not in (".npy", ".mat"):
            raise InvalidArgumentError(f"a cassi model restores cubes (.npy/.mat); {path} is not one (use --measurement for a snapshot)")
        return load_cube(path)

    def export_size(self, operator: Any, image_size: Sequence[int] | None) -> tuple[int, int]:
        mask = (operator.height, operator.width)
        if image_size is not None and tuple(image_size) != mask:
            raise InvalidArgumentError(f"a CASSI network restores cubes of its mask's size {mask[0]} x {mask[1]}, "
                                       f"not {image_size[0]} x {image_size[1]} (operator.use_mask puts in another mask)")
        return mask
