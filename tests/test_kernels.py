"""Blur kernels: the generated 12-kernel bank, the single builders, and load_kernels."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lorun_peft.errors import CorruptFileError, InvalidArgumentError
from lorun_peft.operators.kernels import ISOTROPIC_SIGMAS, gaussian_kernel, kernel_bank, load_kernels, motion_kernel

SHARED_KERNELS = Path(__file__).resolve().parents[2] / "shared" / "data" / "kernels" / "kernels_12.mat"


def second_moments(kernel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centroid (row, col) and the 2x2 covariance of a kernel seen as a distribution."""
    k = kernel.double()
    rows, cols = torch.meshgrid(torch.arange(k.shape[0]), torch.arange(k.shape[1]), indexing="ij")
    coords = torch.stack([rows.flatten(), cols.flatten()], 1).double()
    weights = k.flatten() / k.sum()
    mean = weights @ coords
    centred = coords - mean
    return mean, (centred * weights[:, None]).T @ centred


# ------------------------------------------------------------------------------- the bank
@pytest.mark.parametrize("size", [25, 15, 16])
def test_bank_properties(size):
    bank = kernel_bank(size=size)
    assert bank.shape == (12, size, size) and bank.dtype == torch.float32
    assert torch.allclose(bank.sum(dim=(1, 2)), torch.ones(12), atol=1e-6)
    assert bool((bank >= 0).all())
    assert len({tuple(k.flatten().tolist()) for k in bank}) == 12  # all different


def test_bank_isotropic_kernels():
    bank = kernel_bank()
    for kernel, sigma in zip(bank[:4], ISOTROPIC_SIGMAS):
        assert torch.allclose(kernel, kernel.flip(0), atol=1e-7)
        assert torch.allclose(kernel, kernel.flip(1), atol=1e-7)
        assert torch.allclose(kernel, kernel.T, atol=1e-7)
        mean, cov = second_moments(kernel)
        assert torch.allclose(mean, torch.tensor([12.0, 12.0], dtype=torch.float64), atol=1e-6)
        assert torch.allclose(cov, sigma**2 * torch.eye(2, dtype=torch.float64), atol=0.01 * sigma**2)


def test_bank_anisotropic_and_motion_kernels_are_elongated():
    bank = kernel_bank()
    for kernel in bank[4:]:
        mean, cov = second_moments(kernel)
        small, large = torch.linalg.eigvalsh(cov).sqrt().tolist()
        assert large > 1.3 * small
        assert torch.allclose(mean, torch.tensor([12.0, 12.0], dtype=torch.float64), atol=0.5)  # centred


def test_bank_deterministic_with_seed():
    assert torch.equal(kernel_bank(seed=3), kernel_bank(seed=3))
    a, b = kernel_bank(seed=0), kernel_bank(seed=1)
    assert torch.equal(a[:4], b[:4])  # the isotropic ones do not depend on the seed
    assert not torch.allclose(a[4:], b[4:])


# ------------------------------------------------------------------------------- builders
def test_gaussian_kernel_rotation_and_default_sigma_y():
    k = gaussian_kernel(11, 2.5, 1.0)
    assert torch.allclose(gaussian_kernel(11, 2.5, 1.0, angle=math.pi / 2), k.T, atol=1e-7)
    assert torch.allclose(gaussian_kernel(11, 2.5, 1.0, angle=math.pi), k, atol=1e-7)
    _, cov = second_moments(gaussian_kernel(41, 3.0, 1.0, angle=math.pi / 4))
    assert cov[0, 1] > 1.0  # elongated along the diagonal
    assert torch.equal(gaussian_kernel(9, 1.3), gaussian_kernel(9, 1.3, 1.3))


def test_gaussian_kernel_even_size_is_symmetric():
    k = gaussian_kernel(8, 1.5)
    assert torch.allclose(k, k.flip(0).flip(1), atol=1e-7)


def test_motion_kernel():
    k = motion_kernel(25, length=15.0, seed=7)
    assert k.shape == (25, 25) and bool((k >= 0).all())
    assert float(k.sum()) == pytest.approx(1.0, abs=1e-6)
    assert torch.equal(k, motion_kernel(25, length=15.0, seed=7))
    assert not torch.equal(k, motion_kernel(25, length=15.0, seed=8))
    straight = motion_kernel(31, length=20.0, seed=1, curvature=0.0)
    _, cov = second_moments(straight)
    length_std = float(torch.linalg.eigvalsh(cov)[1].sqrt())
    assert length_std == pytest.approx(20.0 / math.sqrt(12), rel=0.05)  # a uniform segment of 20 px


def test_motion_kernel_longer_than_size_is_shrunk_to_fit():
    k = motion_kernel(7, length=40.0, seed=2, curvature=0.0)
    assert k.shape == (7, 7) and float(k.sum()) == pytest.approx(1.0, abs=1e-6)
    mean, cov = second_moments(k)
    assert torch.allclose(mean, torch.tensor([3.0, 3.0], dtype=torch.float64), atol=1e-6)  # not cut off
    assert float(torch.linalg.eigvalsh(cov)[1].sqrt()) > 1.4  # still spread over the kernel


def test_motion_kernel_zero_length_is_a_delta():
    k = motion_kernel(5, length=0.0)
    assert float(k[2, 2]) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "call,name",
    [
        (lambda: gaussian_kernel(0, 1.0), "size"),
        (lambda: gaussian_kernel(5.5, 1.0), "size"),
        (lambda: gaussian_kernel(5, 0.0), "sigma_x"),
        (lambda: gaussian_kernel(5, 1.0, -1.0), "sigma_y"),
        (lambda: motion_kernel(5, length=-1.0), "length"),
        (lambda: motion_kernel(5, curvature=float("nan")), "curvature"),
        (lambda: kernel_bank(size=0), "size"),
    ],
)
def test_builders_reject_bad_arguments(call, name):
    with pytest.raises(InvalidArgumentError, match=name):
        call()


# ------------------------------------------------------------------------------- load_kernels
def test_load_mat_cell_array(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    kernels = kernel_bank(size=9)[:3].numpy()
    cells = np.empty((1, 3), dtype=object)
    for i in range(3):
        cells[0, i] = kernels[i]
    path = tmp_path / "k.mat"
    scipy_io.savemat(path, {"kernels": cells})
    loaded = load_kernels(path)
    assert loaded.shape == (3, 9, 9) and loaded.dtype == torch.float32
    assert torch.allclose(loaded, torch.from_numpy(kernels), atol=1e-7)


def test_load_mat_numeric_arrays(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    stack = np.random.default_rng(0).random((5, 6, 4))  # MATLAB layout (h, w, K)
    scipy_io.savemat(tmp_path / "stack.mat", {"psf": stack})  # the only variable: used whatever its name
    loaded = load_kernels(str(tmp_path / "stack.mat"))
    assert loaded.shape == (4, 5, 6)
    assert torch.allclose(loaded[2].double(), torch.from_numpy(stack[:, :, 2] / stack[:, :, 2].sum()), atol=1e-6)
    scipy_io.savemat(tmp_path / "one.mat", {"kernels": 2 * np.ones((3, 3))})
    assert torch.allclose(load_kernels(tmp_path / "one.mat"), torch.full((1, 3, 3), 1 / 9))


def test_load_mat_without_scipy(tmp_path, monkeypatch):
    path = tmp_path / "k.mat"
    path.write_bytes(b"anything")
    monkeypatch.setitem(__import__("sys").modules, "scipy.io", None)  # import scipy.io now fails
    monkeypatch.setitem(__import__("sys").modules, "scipy", None)
    with pytest.raises(ImportError, match="pip install scipy"):
        load_kernels(path)


def test_load_shared_kernels_12():
    if not SHARED_KERNELS.is_file():
        pytest.skip(f"{SHARED_KERNELS} is not here (the shared data folder is optional)")
    pytest.importorskip("scipy.io")
    kernels = load_kernels(SHARED_KERNELS)
    assert kernels.shape == (12, 25, 25)
    assert torch.allclose(kernels.sum(dim=(1, 2)), torch.ones(12), atol=1e-5)
    assert bool((kernels >= 0).all())
    for kernel, sigma in zip(kernels[:4], ISOTROPIC_SIGMAS):  # the same isotropic sigmas as ours
        _, cov = second_moments(kernel)
        assert torch.allclose(cov, sigma**2 * torch.eye(2, dtype=torch.float64), atol=0.02)


def test_load_npy(tmp_path):
    stack = np.random.default_rng(1).random((3, 4, 5)).astype(np.float32)
    np.save(tmp_path / "stack.npy", stack)
    loaded = load_kernels(tmp_path / "stack.npy")
    assert loaded.shape == (3, 4, 5)
    assert torch.allclose(loaded.sum(dim=(1, 2)), torch.ones(3), atol=1e-6)
    np.save(tmp_path / "one.npy", np.ones((3, 3)))
    assert load_kernels(tmp_path / "one.npy").shape == (1, 3, 3)


def test_load_png(tmp_path):
    image_module = pytest.importorskip("PIL.Image")
    pixels = np.zeros((7, 9), dtype=np.uint8)
    pixels[3, 2:7] = [50, 100, 255, 100, 50]
    image_module.fromarray(pixels, mode="L").save(tmp_path / "k.png")
    loaded = load_kernels(tmp_path / "k.png")
    assert loaded.shape == (1, 7, 9)
    assert torch.allclose(loaded[0].double(), torch.from_numpy(pixels / pixels.sum()), atol=1e-7)


def test_load_missing_file(tmp_path):
    path = tmp_path / "nope.mat"
    with pytest.raises(FileNotFoundError, match="nope.mat"):
        load_kernels(path)


@pytest.mark.parametrize("name", ["bad.mat", "bad.npy", "bad.png"])
def test_load_corrupt_file(tmp_path, name):
    if name.endswith(".mat"):
        pytest.importorskip("scipy.io")
    if name.endswith(".png"):
        pytest.importorskip("PIL.Image")
    path = tmp_path / name
    path.write_bytes(b"this is not a kernel file at all" * 4)
    with pytest.raises(CorruptFileError, match=name):
        load_kernels(path)


def test_load_truncated_mat(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    path = tmp_path / "cut.mat"
    scipy_io.savemat(path, {"kernels": np.ones((25, 25, 4))})
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CorruptFileError, match="cut.mat"):
        load_kernels(path)


def test_load_never_unpickles(tmp_path):
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CorruptFileError, match="objects.npy"):
        load_kernels(path)


def test_load_bad_content(tmp_path):
    np.save(tmp_path / "zero.npy", np.zeros((2, 3, 3)))
    with pytest.raises(CorruptFileError, match="zero.npy"):
        load_kernels(tmp_path / "zero.npy")
    np.save(tmp_path / "flat.npy", np.ones(5))
    with pytest.raises(CorruptFileError, match="flat.npy"):
        load_kernels(tmp_path / "flat.npy")


def test_load_mat_with_ambiguous_variables(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    scipy_io.savemat(tmp_path / "two.mat", {"a": np.ones((3, 3)), "b": np.ones((3, 3))})
    with pytest.raises(CorruptFileError, match="two.mat"):
        load_kernels(tmp_path / "two.mat")


def test_load_unsupported_suffix(tmp_path):
    path = tmp_path / "k.txt"
    path.write_text("1 2 3")
    with pytest.raises(InvalidArgumentError, match="k.txt"):
        load_kernels(path)
