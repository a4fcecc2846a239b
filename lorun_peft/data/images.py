"""Training and test data: image folders, spectral-cube folders and built-in images (no download).

Every dataset returns C x H x W float tensors in [0, 1]. Measurements are not stored: training
simulates them on the fly with the network's own operator (see ``lorun_peft.train``).

Random patches and augmentation take an explicit ``torch.Generator`` through
``dataset.random_item(index, generator)``, so ``lorun_peft.train`` can derive them from its one
seeded, checkpointed generator (exact resume). Plain ``dataset[index]`` (for a DataLoader) uses
torch's global RNG, which DataLoader seeds per worker.

>>> images = synthetic_images(2, size=32, seed=0)
>>> tuple(images.shape), float(images.min()) >= 0, float(images.max()) <= 1
((2, 1, 32, 32), True, True)
>>> cubes = synthetic_cubes(1, size=16, bands=8)
>>> tuple(cubes.shape)
(1, 8, 16, 16)
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import CorruptFileError, InvalidArgumentError

__all__ = [
    "IMAGE_SUFFIXES",
    "CUBE_SUFFIXES",
    "CUBE_KEYS",
    "ImageFolder",
    "SpectralCubes",
    "load_image",
    "image_channels",
    "load_cube",
    "list_files",
    "augment",
    "random_crop",
    "random_mask_crop",
    "center_crop",
    "modcrop",
    "synthetic_images",
    "synthetic_cubes",
    "photographs",
    "scikit_image_photographs",
    "PHOTOGRAPHS",
]

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg")
CUBE_SUFFIXES = (".npy", ".mat")
# .mat variable names tried in order: KAIST/TSA-Net test scenes use 'img', MST's CAVE training
# files 'img_expand'; any file with exactly one variable works too.
CUBE_KEYS = ("img", "cube", "img_expand", "hsi", "data")


# ------------------------------------------------------------------------------------ files
def list_files(root: str | os.PathLike | Sequence[str | os.PathLike], suffixes: Sequence[str]) -> list[Path]:
    """The files under ``root`` (a folder, not recursive) with one of ``suffixes``, sorted by name;
    or ``root`` itself when it is a list of files.

    A missing folder raises FileNotFoundError; one without matching files InvalidArgumentError.
    """
    if isinstance(root, (str, os.PathLike)):
        folder = Path(root)
        if not folder.is_dir():
            raise FileNotFoundError(f"data folder not found: {folder}")
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
        if not files:
            raise InvalidArgumentError(f"data folder {folder} has no files ending in {', '.join(suffixes)}")
        return files
    files = [Path(p) for p in root]
    if not files:
        raise InvalidArgumentError("the list of data files is empty")
    for path in files:
        if not path.is_file():
            raise FileNotFoundError(f"data file not found: {path}")
    return files


def load_image(path: str | os.PathLike, channels: int | None = None) -> torch.Tensor:
    """Read an image file as a float32 C x H x W tensor in [0, 1].

    ``channels=1`` gives gray (colour converted with ITU-R 601 luma, Pillow's ``convert('L')``),
    ``channels=3`` RGB (gray replicated), ``None`` keeps what the file holds: 1 for gray and
    palette images with a gray palette (Set11's ``Parrots.tif``), 3 otherwise. Alpha is dropped.
    16-bit images are scaled by 65535. An unreadable file raises CorruptFileError naming it.
    """
    from PIL import Image

    if channels not in (None, 1, 3):
        raise InvalidArgumentError(f"channels must be 1, 3 or None, got {channels!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            array = _image_array(image, channels)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise CorruptFileError(f"image {path} cannot be read: {err}") from err
    return torch.from_numpy(array)


def image_channels(path: str | os.PathLike) -> int:
    """1 for a gray image file (gray modes, a gray palette), 3 for colour; reads the header only.

    >>> import tempfile, numpy as np
    >>> from PIL import Image
    >>> path = tempfile.mkdtemp() + "/gray.png"
    >>> Image.fromarray(np.zeros((4, 4), np.uint8)).save(path)
    >>> image_channels(path)
    1
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            return 1 if image.mode in _GRAY_MODES or _has_gray_palette(image) else 3
    except (OSError, ValueError, SyntaxError) as err:
        raise CorruptFileError(f"image {path} cannot be read: {err}") from err


_GRAY_MODES = ("L", "LA", "1", "I", "I;16", "I;16B", "I;16L", "F")


def _image_array(image: Any, channels: int | None) -> np.ndarray:
    """C x H x W float32 in [0, 1] from an opened PIL image."""
    if channels is None:
        channels = 1 if image.mode in _GRAY_MODES or _has_gray_palette(image) else 3
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16/32-bit gray
        array = np.asarray(image, dtype=np.float32)
        array = array / 65535.0 if image.mode != "F" else array
        array = array[None]
        return np.ascontiguousarray(np.repeat(array, 3, axis=0) if channels == 3 else array).clip(0, 1)
    mode = "L" if channels == 1 else "RGB"
    array = np.asarray(image.convert(mode), dtype=np.float32) / 255.0
    return np.ascontiguousarray(array[None] if channels == 1 else array.transpose(2, 0, 1))


def _has_gray_palette(image: Any) -> bool:
    if image.mode != "P":
        return False
    palette = np.asarray(image.getpalette() or [], dtype=np.int64)
    rgb = palette[: len(palette) // 3 * 3].reshape(-1, 3)
    return bool((rgb == rgb[:, :1]).all())


def load_cube(path: str | os.PathLike, layout: str | None = None) -> torch.Tensor:
    """Read a spectral cube from .npy (never unpickled) or .mat (MATLAB v5, needs scipy) as
    float32 bands x H x W.

    .mat files: the first of ``CUBE_KEYS`` present ('img', 'cube', 'img_expand', 'hsi', 'data'),
    or the file's only variable. Integer data is scaled by its type's maximum (uint16 / 65535),
    floats are kept. ``layout`` "hwb" (MATLAB's H x W x bands, as the KAIST scenes) or "bhw";
    None takes the smaller of the first and last axes as the band axis.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cube file not found: {path}")
    if layout not in (None, "hwb", "bhw"):
        raise InvalidArgumentError(f"layout must be 'hwb', 'bhw' or None, got {layout!r}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise CorruptFileError(f"cube {path} is not a readable numeric .npy file: {err}") from err
    elif suffix == ".mat":
        array = _read_mat_cube(path)
    else:
        raise InvalidArgumentError(f"cube file {path} must end in .npy or .mat")
    if array.ndim != 3 or 0 in array.shape or array.dtype.kind not in "biuf":
        raise CorruptFileError(f"cube {path} must hold a 3-D numeric array, got shape {array.shape} ({array.dtype})")
    if array.dtype.kind in "iu":
        array = array.astype(np.float32) / np.iinfo(array.dtype).max
    if layout is None:
        layout = "bhw" if array.shape[0] < array.shape[-1] else "hwb"
    if layout == "hwb":
        array = np.moveaxis(array, -1, 0)
    cube = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if not bool(torch.isfinite(cube).all()):
        raise CorruptFileError(f"cube {path} contains NaN or infinite values")
    return cube


def _read_mat_cube(path: Path) -> np.ndarray:
    try:
        from scipy.io import loadmat
    except ImportError as err:
        raise ImportError("reading .mat cubes needs scipy: pip install scipy") from err
    try:
        contents = loadmat(str(path))
    except NotImplementedError as err:  # MATLAB v7.3 (HDF5)
        raise CorruptFileError(f"cube {path} is MATLAB v7.3 (HDF5), which scipy cannot read; save it as v5 or .npy") from err
    except Exception as err:  # noqa: BLE001 - scipy raises many types on damaged files
        raise CorruptFileError(f"cube {path} is not a readable .mat file: {err}") from err
    names = [name for name in contents if not name.startswith("__")]
    key = next((k for k in CUBE_KEYS if k in names), names[0] if len(names) == 1 else None)
    if key is None:
        raise CorruptFileError(f"cube {path} has none of the variables {list(CUBE_KEYS)} (it has {names})")
    return np.asarray(contents[key])


# ---------------------------------------------------------------------- crops and augmentation
def _randint(high: int, generator: torch.Generator | None) -> int:
    return int(torch.randint(high, (1,), generator=generator))


def random_crop(x: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random ``size`` x ``size`` crop of the last two dimensions of ``x``."""
    h, w = x.shape[-2:]
    if h < size or w < size:
        raise InvalidArgumentError(f"cannot crop {size} x {size} from an image of {h} x {w}")
    top, left = _randint(h - size + 1, generator), _randint(w - size + 1, generator)
    return x[..., top : top + size, left : left + size]


def random_mask_crop(mask: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random ``size`` x ``size`` crop of an H x W CASSI mask (TSA-Net's real-data training).

    >>> random_mask_crop(torch.rand(660, 660), 256, torch.Generator().manual_seed(0)).shape
    torch.Size([256, 256])
    """
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        raise InvalidArgumentError(f"mask must be an H x W tensor, got {getattr(mask, 'shape', type(mask).__name__)}")
    return random_crop(mask, size, generator).clone()


def center_crop(x: torch.Tensor, height: int, width: int | None = None) -> torch.Tensor:
    """The centre ``height`` x ``width`` of the last two dimensions of ``x``."""
    width = height if width is None else width
    h, w = x.shape[-2:]
    if h < height or w < width:
        raise InvalidArgumentError(f"cannot crop {height} x {width} from an image of {h} x {w}")
    top, left = (h - height) // 2, (w - width) // 2
    return x[..., top : top + height, left : left + width]


def modcrop(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Crop the bottom/right so H and W are multiples of ``multiple`` (SR papers' ``modcrop``)."""
    h, w = x.shape[-2:]
    return x[..., : h - h % multiple, : w - w % multiple]


def augment(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One of the 8 flips / 90-degree rotations of the last two dimensions, chosen at random."""
    choice = _randint(8, generator)
    if choice & 1:
        x = x.flip(-1)
    return torch.rot90(x, choice >> 1, dims=(-2, -1))


# ------------------------------------------------------------------------------- datasets
class _PatchDataset(Dataset):
    """Shared logic: items kept in memory, random patches and flips/rotations on request."""

    def __init__(
        self, items: list[torch.Tensor], files: list[Path], patch_size: int | None, augment: bool, seed: int | None
    ) -> None:
        if patch_size is not None and (isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1):
            raise InvalidArgumentError(f"patch_size must be None or an int >= 1, got {patch_size!r}")
        if not isinstance(augment, bool):
            raise InvalidArgumentError(f"augment must be True or False, got {augment!r}")
        for path, item in zip(files, items):
            if patch_size is not None and min(item.shape[-2:]) < patch_size:
                raise InvalidArgumentError(
                    f"{path} is {item.shape[-2]} x {item.shape[-1]}, smaller than patch_size {patch_size}"
                )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise InvalidArgumentError(f"seed must be None or an int, got {seed!r}")
        self.items, self.files, self.patch_size, self.augment = items, files, patch_size, augment
        self.seed = seed
        self.generator = None if seed is None else torch.Generator().manual_seed(seed)

    @property
    def names(self) -> list[str]:
        """File names (without folder), in item order."""
        return [p.name for p in self.files]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.random_item(index, self.generator)

    def random_item(self, index: int, generator: torch.Generator | None) -> torch.Tensor:
        """Item ``index``: a random patch (if ``patch_size``), randomly flipped/rotated (if
        ``augment``), drawn from ``generator`` (None: torch's global RNG)."""
        x = self.items[index]
        if self.patch_size is not None:
            x = random_crop(x, self.patch_size, generator)
        if self.augment:
            x = augment(x, generator)
        return x.contiguous().clone()

    def full(self, index: int) -> torch.Tensor:
        """Item ``index`` whole, without cropping or augmentation (for evaluation)."""
        return self.items[index].clone()


class ImageFolder(_PatchDataset):
    """Images of a folder (png, tif/tiff, bmp, jpg/jpeg; gray or RGB) as C x H x W tensors in [0, 1].

    Args:
        root: a folder (its files with those suffixes, sorted by name) or a list of image files.
        patch_size: return random ``patch_size`` square patches (None: whole images).
        channels: 1 (gray; colour images converted, palette TIFFs read through their palette),
            3 (RGB; gray images replicated) or None (as each file holds: colour stays colour;
            whole images only, as patches of a batch need one channel count).
        augment: random horizontal flips and 90-degree rotations (the 8 dihedral transforms).
        seed: None: ``dataset[i]`` draws patches from torch's global RNG (what a DataLoader seeds
            per worker); an int: from the dataset's own generator seeded with it (reproducible in
            one process; do not combine with a multi-worker DataLoader, whose workers would copy
            it). ``lorun_peft.train`` uses neither: it calls ``random_item`` with its own generator.

    Images are decoded once, here, so a damaged file fails at once (CorruptFileError naming
    it); an empty folder raises InvalidArgumentError, a missing one FileNotFoundError.

    >>> import tempfile, numpy as np
    >>> from PIL import Image
    >>> folder = tempfile.mkdtemp()
    >>> Image.fromarray(np.zeros((40, 50), np.uint8)).save(folder + "/a.png")
    >>> data = ImageFolder(folder, patch_size=32)
    >>> len(data), tuple(data[0].shape), data.names
    (1, (1, 32, 32), ['a.png'])
    """

    def __init__(
        self,
        root: str | os.PathLike | Sequence[str | os.PathLike],
        patch_size: int | None = None,
        channels: int | None = 1,
        augment: bool = True,
        seed: int | None = None,
    ) -> None:
        if channels not in (1, 3, None) or (channels is None and patch_size is not None):
            raise InvalidArgumentError(f"channels must be 1 (gray) or 3 (RGB) (or None for whole images), got {channels!r}")
        files = list_files(root, IMAGE_SUFFIXES)
        self.channels = channels
        super().__init__([load_image(p, channels) for p in files], files, patch_size, augment, seed)


class SpectralCubes(_PatchDataset):
    """Spectral cubes (.npy or .mat, see :func:`load_cube`) of a folder as bands x H x W tensors.

    All cubes must have the same number of bands. ``patch_size`` gives random square crops
    (CASSI trains on crops the size of the mask), ``augment`` flips and rotates them; ``seed``
    as in :class:`ImageFolder`.

    >>> import tempfile, numpy as np
    >>> folder = tempfile.mkdtemp()
    >>> np.save(folder + "/scene.npy", np.random.rand(32, 32, 28).astype(np.float32))  # H x W x bands
    >>> cubes = SpectralCubes(folder, patch_size=16)
    >>> tuple(cubes[0].shape), cubes.bands
    ((28, 16, 16), 28)
    """

    def __init__(
        self,
        root: str | os.PathLike | Sequence[str | os.PathLike],
        patch_size: int | None = None,
        augment: bool = True,
        layout: str | None = None,
        seed: int | None = None,
    ) -> None:
        files = list_files(root, CUBE_SUFFIXES)
        cubes = [load_cube(p, layout) for p in files]
        bands = {c.shape[0] for c in cubes}
        if len(bands) != 1:
            found = {p.name: c.shape[0] for p, c in zip(files, cubes)}
            raise InvalidArgumentError(f"the cubes have different numbers of bands: {found}")
        self.bands = bands.pop()
        super().__init__(cubes, files, patch_size, augment, seed)


# ----------------------------------------------------------------------- built-in images
def synthetic_images(n: int, size: int = 64, seed: int = 0, channels: int = 1) -> torch.Tensor:
    """``n`` images of ``size`` x ``size`` in [0, 1]: a shaded background, discs, bars and stripes."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    out = torch.empty(n, channels, size, size)
    for i in range(n):
        for c in range(channels):
            rand = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
            a, b, base = rand(3) - 0.5
            img = 0.5 + base * 0.4 + a * (xx - 0.5) + b * (yy - 0.5)
            for _ in range(int(rand(1) * 4) + 2):  # discs with soft edges
                cx, cy, r, v = rand(4)
                d = torch.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
                img = torch.where(d < 0.08 + 0.25 * r, 0.15 + 0.7 * v, img)
            for _ in range(int(rand(1) * 3) + 1):  # rotated bars
                angle, offset, width, v = rand(4)
                t = (xx - 0.5) * math.cos(math.pi * angle) + (yy - 0.5) * math.sin(math.pi * angle)
                img = torch.where((t - (offset - 0.5) * 0.8).abs() < 0.02 + 0.06 * width, v, img)
            freq, angle, amp = rand(3)  # a striped texture over everything
            t = xx * math.cos(math.pi * angle) + yy * math.sin(math.pi * angle)
            img = img + 0.08 * amp * torch.sin(2 * math.pi * (4 + 12 * freq) * t)
            out[i, c] = img
    return out.clamp(0, 1)


def synthetic_cubes(n: int, size: int = 64, bands: int = 28, seed: int = 0, materials: int = 3) -> torch.Tensor:
    """``n`` spectral cubes (n x bands x size x size, in [0, 1]): a few materials, each a smooth
    spectrum (a Gaussian bump over the bands) times a synthetic abundance image. Cubes with the
    structure of photographs: :class:`lorun_peft.data.spectral.GeneratedCubes` (what ``lorun train`` uses)."""
    g = torch.Generator().manual_seed(seed)
    abundance = synthetic_images(n * materials, size, seed=seed).view(n, materials, size, size)
    abundance = abundance / abundance.sum(1, keepdim=True).clamp_min(1e-6)
    wavelengths = torch.linspace(0, 1, bands)
    centres, widths = torch.rand(n, materials, 1, generator=g), 0.15 + 0.3 * torch.rand(n, materials, 1, generator=g)
    spectra = torch.exp(-((wavelengths - centres) ** 2) / (2 * widths**2))  # n x materials x bands
    brightness = synthetic_images(n, size, seed=seed + 1)  # shading shared by all bands
    cubes = torch.einsum("nmb,nmhw->nbhw", spectra, abundance) * (0.3 + 0.7 * brightness)
    return cubes.clamp(0, 1)


PHOTOS = Path(__file__).parent / "photos"  # CC0 / public-domain photographs, 256 x 256 (photos/LICENSES.md)
PHOTOGRAPHS = ("camera", "astronaut", "coffee", "chelsea", "brick", "gravel", "clock")


def photographs(names: Sequence[str] = PHOTOGRAPHS, channels: int = 1, size: int | None = None) -> list[torch.Tensor]:
    """The photographs shipped inside the package (256 x 256 crops of scikit-image's CC0 and
    public-domain ones; sources and licences in ``lorun_peft/data/photos/LICENSES.md``).

    Returns C x H x W tensors in [0, 1] (``size``: centre crops of that side).

    >>> [tuple(x.shape) for x in photographs(["camera", "coffee"], channels=3, size=128)]
    [(3, 128, 128), (3, 128, 128)]
    """
    unknown = [name for name in names if name not in PHOTOGRAPHS]
    if unknown:
        raise InvalidArgumentError(f"no shipped photograph named {unknown[0]!r}; choose from {list(PHOTOGRAPHS)}")
    out = [load_image(PHOTOS / f"{name}.png", channels) for name in names]
    return [center_crop(x, size) for x in out] if size is not None else out


def scikit_image_photographs(names: Sequence[str], channels: int = 1, size: int | None = None) -> list[torch.Tensor]:
    """Full-size photographs from scikit-image's wheel (optional dependency; the zoo's benchmark
    tests on them). Returns C x H x W tensors in [0, 1] (``size``: centre crops of that side).
    Without scikit-image this raises ImportError saying how to install it.
    """
    try:
        from skimage import data as skdata
    except ImportError as err:
        raise ImportError("scikit-image's photographs need scikit-image: pip install scikit-image") from err
    from PIL import Image

    out = []
    for name in names:
        loader = getattr(skdata, name, None)
        if loader is None:
            raise InvalidArgumentError(f"scikit-image has no image named {name!r}")
        array = np.asarray(loader())
        if array.dtype != np.uint8:  # bool or float images: scale [0, 1] to 8 bits
            array = (array.astype(np.float64).clip(0, 1) * 255).round().astype(np.uint8)
        image = Image.fromarray(array)
        x = torch.from_numpy(_image_array(image, channels))
        out.append(center_crop(x, size) if size is not None else x)
    return out
