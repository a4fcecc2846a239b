"""Data: image and spectral-cube folders, built-in images (:mod:`.images`) and generated spectral
cubes (:mod:`.spectral`). ``lorun_peft.data`` gives the names of :mod:`.images`.

>>> from lorun_peft.data import synthetic_images
>>> tuple(synthetic_images(1, size=16, seed=0).shape)
(1, 1, 16, 16)
"""

from __future__ import annotations

from .images import (  # noqa: F401
    IMAGE_SUFFIXES,
    CUBE_SUFFIXES,
    CUBE_KEYS,
    ImageFolder,
    SpectralCubes,
    load_image,
    image_channels,
    load_cube,
    list_files,
    augment,
    random_crop,
    random_mask_crop,
    center_crop,
    modcrop,
    synthetic_images,
    synthetic_cubes,
    photographs,
    scikit_image_photographs,
    PHOTOGRAPHS,
)

__all__ = [
    "IMAGE_SUFFIXES", "CUBE_SUFFIXES", "CUBE_KEYS", "ImageFolder", "SpectralCubes", "load_image",
    "image_channels", "load_cube", "list_files", "augment", "random_crop", "random_mask_crop",
    "center_crop", "modcrop", "synthetic_images", "synthetic_cubes", "photographs",
    "scikit_image_photographs", "PHOTOGRAPHS",
]
