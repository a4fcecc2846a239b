"""Image and cube folders, crops and augmentation, built-in images."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lorun_peft.data.images
from lorun_peft.data.images import (
    PHOTOGRAPHS,
    ImageFolder,
    SpectralCubes,
    augment,
    center_crop,
    load_cube,
    load_image,
    modcrop,
    photographs,
    random_mask_crop,
    scikit_image_photographs,
    synthetic_cubes,
    synthetic_images,
)
from lorun_peft.errors import CorruptFileError, InvalidArgumentError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def gray_palette_tiff(path: Path, values: np.ndarray) -> None:
    """A mode-P TIFF whose palette is the grey identity, like Set11's Parrots.tif."""
    image = Image.new("P", (values.shape[1], values.shape[0]))
    image.putpalette([v for i in range(256) for v in (i, i, i)])
    image.putdata(values.flatten().tolist())
    image.save(path)
    assert Image.open(path).mode == "P"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (40, 48), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "a_gray.png")
    Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(tmp_path / "b_rgb.bmp")
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "c_rgb.jpg", quality=95)
    gray_palette_tiff(tmp_path / "d_palette.tif", gray)
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_folder_lists_images_sorted_and_converts_to_gray(folder):
    data = ImageFolder(folder, channels=1, augment=False)
    assert data.names == ["a_gray.png", "b_rgb.bmp", "c_rgb.jpg", "d_palette.tif"]
    assert all(x.shape[0] == 1 and x.dtype == torch.float32 for x in data.items)
    # the palette TIFF reads as the same gray values as the PNG it was made from
    assert torch.equal(data.full(0), data.full(3))
    rgb = np.asarray(Image.open(folder / "b_rgb.bmp").convert("L"), dtype=np.float32) / 255
    assert np.allclose(data.full(1)[0].numpy(), rgb)


def test_rgb_mode_replicates_gray(folder):
    data = ImageFolder(folder, channels=3, augment=False)
    gray = data.full(0)
    assert gray.shape == (3, 40, 48) and torch.equal(gray[0], gray[2])
    assert data.full(1).shape == (3, 36, 36)


def test_load_image_keeps_what_the_file_holds(folder, tmp_path):
    assert load_image(folder / "d_palette.tif").shape == (1, 40, 48)
    assert load_image(folder / "b_rgb.bmp").shape == (3, 36, 36)
    deep = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    x = load_image(tmp_path / "deep.png")
    assert x.shape == (1, 8, 8) and abs(float(x.max()) - 63000 / 65535) < 1e-6


def test_patches_and_augmentation_are_seeded(folder):
    data = ImageFolder(folder, patch_size=16, channels=1)
    a = data.random_item(0, torch.Generator().manual_seed(3))
    b = data.random_item(0, torch.Generator().manual_seed(3))
    assert a.shape == (1, 16, 16) and torch.equal(a, b)
    draws = {data.random_item(0, torch.Generator().manual_seed(s)).sum().item() for s in range(10)}
    assert len(draws) > 5
    seeded = ImageFolder(folder, patch_size=16, seed=1), ImageFolder(folder, patch_size=16, seed=1)
    assert torch.equal(seeded[0][2], seeded[1][2])


def test_augment_covers_the_eight_symmetries():
    x = torch.arange(4.0).view(1, 2, 2)
    seen = {tuple(augment(x, torch.Generator().manual_seed(s)).flatten().tolist()) for s in range(200)}
    assert len(seen) == 8


def test_crops():
    x = torch.arange(30.0).view(1, 5, 6)
    assert center_crop(x, 3).shape == (1, 3, 3)
    assert torch.equal(center_crop(x, 3, 4), x[:, 1:4, 1:5])
    assert modcrop(x, 4).shape == (1, 4, 4)
    mask = torch.rand(20, 30)
    crop = random_mask_crop(mask, 8, torch.Generator().manual_seed(0))
    assert crop.shape == (8, 8)
    with pytest.raises(InvalidArgumentError, match="cannot crop"):
        random_mask_crop(mask, 25)


def test_unreadable_image_names_the_file(folder):
    (folder / "e_broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(CorruptFileError, match="e_broken.png"):
        ImageFolder(folder)


def test_truncated_image_names_the_file(tmp_path):
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError, match="t.png"):
        load_image(tmp_path / "t.png")


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(InvalidArgumentError, match=str(tmp_path)):
        ImageFolder(tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ImageFolder(tmp_path / "nowhere")


def test_bad_arguments(folder):
    with pytest.raises(InvalidArgumentError, match="channels"):
        ImageFolder(folder, channels=2)
    with pytest.raises(InvalidArgumentError, match="smaller than patch_size"):
        ImageFolder(folder, patch_size=40)
    with pytest.raises(InvalidArgumentError, match="patch_size"):
        ImageFolder(folder, patch_size=0)


def test_spectral_cubes_npy_and_mat(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    rng = np.random.default_rng(0)
    np.save(tmp_path / "a.npy", rng.random((24, 20, 6)).astype(np.float32))  # H x W x bands
    np.save(tmp_path / "b.npy", rng.random((6, 20, 24)).astype(np.float32))  # bands x H x W
    scipy_io.savemat(tmp_path / "c.mat", {"img": (rng.random((20, 20, 6)) * 65535).astype(np.uint16)})
    scipy_io.savemat(tmp_path / "d.mat", {"anything": rng.random((20, 22, 6))})
    cubes = SpectralCubes(tmp_path, patch_size=16)
    assert cubes.bands == 6 and len(cubes) == 4
    assert cubes.full(0).shape == (6, 24, 20) and cubes.full(1).shape == (6, 20, 24)
    assert 0 <= float(cubes.full(2).min()) and float(cubes.full(2).max()) <= 1
    item = cubes.random_item(3, torch.Generator().manual_seed(0))
    assert item.shape == (6, 16, 16)


def test_cube_errors(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    np.save(tmp_path / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CorruptFileError, match="pickled.npy"):
        load_cube(tmp_path / "pickled.npy")
    scipy_io.savemat(tmp_path / "two.mat", {"x": np.zeros((4, 4, 3)), "y": np.zeros((4, 4, 3))})
    with pytest.raises(CorruptFileError, match="none of the variables"):
        load_cube(tmp_path / "two.mat")
    np.save(tmp_path / "flat.npy", np.zeros((4, 4)))
    with pytest.raises(CorruptFileError, match="3-D"):
        load_cube(tmp_path / "flat.npy")
    folder = tmp_path / "mixed"
    folder.mkdir()
    np.save(folder / "a.npy", np.zeros((3, 8, 8), np.float32))
    np.save(folder / "b.npy", np.zeros((4, 8, 8), np.float32))
    with pytest.raises(InvalidArgumentError, match="different numbers of bands"):
        SpectralCubes(folder)


def test_builtin_images():
    a, b = synthetic_images(3, 32, seed=5), synthetic_images(3, 32, seed=5)
    assert torch.equal(a, b) and a.shape == (3, 1, 32, 32)
    cubes = synthetic_cubes(2, 16, bands=10, seed=1)
    assert cubes.shape == (2, 10, 16, 16) and float(cubes.min()) >= 0 and float(cubes.max()) <= 1


def test_shipped_photographs_load_without_scikit_image(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)  # importing it now fails
    images = photographs(channels=1)
    assert len(images) == len(PHOTOGRAPHS) == 7
    assert all(x.shape == (1, 256, 256) and 0 <= float(x.min()) < float(x.max()) <= 1 for x in images)
    assert photographs(["astronaut"], channels=3, size=64)[0].shape == (3, 64, 64)
    colour = photographs(["coffee"], channels=3)[0]
    assert not torch.equal(colour[0], colour[1])  # a colour photograph, not gray replicated


def test_every_shipped_photograph_has_its_licence_and_nothing_else_ships():
    folder = Path(lorun_peft.data.images.__file__).parent / "photos"
    licences = (folder / "LICENSES.md").read_text()
    assert sorted(f.stem for f in folder.glob("*.png")) == sorted(PHOTOGRAPHS)
    for name in PHOTOGRAPHS:
        row = next(line for line in licences.splitlines() if line.startswith(f"| {name}.png |"))
        assert "| CC0 |" in row or "| public domain |" in row
    assert sum(f.stat().st_size for f in folder.iterdir()) < 600_000


def test_unknown_shipped_photograph():
    with pytest.raises(InvalidArgumentError, match="no shipped photograph named 'lena'; choose from"):
        photographs(["camera", "lena"])


def test_photographs_from_scikit_image():
    pytest.importorskip("skimage")
    images = scikit_image_photographs(["camera", "astronaut"], channels=1, size=64)
    assert [tuple(x.shape) for x in images] == [(1, 64, 64), (1, 64, 64)]
    assert scikit_image_photographs(["astronaut"], channels=3)[0].shape == (3, 512, 512)
    full, shipped = scikit_image_photographs(["camera"], size=256)[0], photographs(["camera"])[0]
    assert torch.equal(full, shipped)  # the shipped file is its centre crop, lossless
    with pytest.raises(InvalidArgumentError, match="scikit-image has no image named 'lena'"):
        scikit_image_photographs(["lena"])


@pytest.mark.skipif(not (SHARED / "set11").is_dir(), reason="needs ../shared/data (benchmark data)")
def test_set11_palette_tiffs_load_as_gray():
    data = ImageFolder(SHARED / "set11", augment=False)
    assert len(data) == 11 and all(x.shape[0] == 1 for x in data.items)
    for name in ("Parrots.tif", "foreman.tif"):
        raw = np.asarray(Image.open(SHARED / "set11" / name), dtype=np.float32) / 255
        assert np.array_equal(data.full(data.names.index(name))[0].numpy(), raw)


@pytest.mark.skipif(not (SHARED / "set14").is_dir(), reason="needs ../shared/data (benchmark data)")
def test_set14_gray_bridge_loads_as_rgb():
    assert load_image(SHARED / "set14" / "bridge.bmp", channels=3).shape == (3, 512, 512)
