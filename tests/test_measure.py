"""Which sampling a measurement needs: `lorun measure` records it, `lorun restore --measurement`
refuses a measurement of another sampling, `lorun inspect` names and exports it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lorun_peft import zoo
from lorun_peft.cli import main
from lorun_peft.errors import CorruptFileError, InvalidArgumentError
from lorun_peft.operators.cs import BlockCS
from lorun_peft.cli.inputs import read_measurement, write_measurement

CONFIG = {"task": "cs", "channels": 1}


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def photo(tmp_path):
    g = np.random.default_rng(0)
    pixels = np.clip(np.cumsum(g.normal(0, 8, (64, 96)), axis=1) + 128, 0, 255).astype(np.uint8)
    path = tmp_path / "photo.png"
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def other_sampling(tmp_path):
    """The zoo's cs-0.25 network measuring with another matrix of the same shape, saved as a network."""
    net = zoo.load("cs-0.25")
    with torch.no_grad():
        net.operator.phi.copy_(BlockCS(0.25, init="orthogonal", seed=99).phi)
    return net.save_pretrained(tmp_path / "other")


def test_measure_then_restore_with_the_same_model(capsys, tmp_path, photo):
    code, out, _ = run(capsys, "measure", "--model", "zoo:cs-0.25", photo, tmp_path / "y.npz")
    assert code == 0 and "sampling sha256:" in out
    stored = np.load(tmp_path / "y.npz", allow_pickle=False)
    assert stored["y"].shape == (1, 256, 2, 3)
    assert str(stored["sampling"]) == zoo.load("cs-0.25").operator.sampling_fingerprint
    code, out, _ = run(capsys, "restore", "--measurement", "--model", "zoo:cs-0.25", tmp_path / "y.npz", tmp_path / "x.png")
    assert code == 0, out
    assert Image.open(tmp_path / "x.png").size == (96, 64)


def test_a_measurement_of_another_sampling_is_refused(capsys, tmp_path, photo, other_sampling):
    assert run(capsys, "measure", "--model", "zoo:cs-0.25", photo, tmp_path / "y.npz")[0] == 0
    code, _, err = run(capsys, "restore", "--measurement", "--model", other_sampling, tmp_path / "y.npz", tmp_path / "x.png")
    assert code == 2 and "Traceback" not in err
    expected = zoo.load("cs-0.25").operator.sampling_fingerprint
    assert f"was taken with sampling {expected}" in err and "but this model expects sampling sha256:" in err
    assert not (tmp_path / "x.png").exists()


def test_a_bare_array_of_the_wrong_ratio_is_refused(capsys, tmp_path, photo):
    assert run(capsys, "measure", "--model", "zoo:cs-0.25", photo, tmp_path / "y.npy")[0] == 0
    code, _, err = run(capsys, "restore", "--measurement", "--model", "zoo:cs-0.10", tmp_path / "y.npy", tmp_path / "x.png")
    assert code == 2 and "does not fit the model" in err


@pytest.mark.parametrize("suffix", [".npy", ".mat"])
def test_inspect_names_and_exports_the_sampling(capsys, tmp_path, suffix):
    path = tmp_path / f"patterns{suffix}"
    code, out, _ = run(capsys, "inspect", "--model", "zoo:cs-0.10", "--export-sampling", path)
    op = zoo.load("cs-0.10").operator
    assert code == 0 and f"sampling: {op.sampling_fingerprint} (102 patterns of 32 x 32 pixels)" in out
    if suffix == ".npy":
        patterns = np.load(path, allow_pickle=False)
    else:
        from scipy.io import loadmat

        patterns = loadmat(str(path))["patterns"]
    np.testing.assert_allclose(patterns.reshape(102, -1), op.phi.detach().numpy(), atol=1e-6)


def test_export_sampling_needs_a_block_cs_model(capsys, tmp_path):
    code, _, err = run(capsys, "inspect", "--model", "zoo:sr-x2-k0", "--export-sampling", tmp_path / "p.npy")
    assert code == 2 and "--export-sampling needs a block CS model" in err
    code, _, err = run(capsys, "inspect", "--task", "cs", "--export-sampling", tmp_path / "p.npy")
    assert code == 2 and "--export-sampling needs --model" in err


def test_npz_without_y_and_bad_suffixes(tmp_path):
    np.savez(tmp_path / "bad.npz", x=np.zeros(3))
    with pytest.raises(CorruptFileError, match="has no array 'y'"):
        read_measurement(tmp_path / "bad.npz", CONFIG)
    with pytest.raises(InvalidArgumentError, match=r"must be an image, \.npy, \.npz or \.mat"):
        read_measurement(tmp_path / "y.txt", CONFIG)
    with pytest.raises(InvalidArgumentError, match=r"written as \.npz \(with its sampling\) or \.npy"):
        write_measurement(tmp_path / "y.mat", torch.zeros(1, 4, 1, 1), None)


def test_npz_round_trip_keeps_values_and_sampling(tmp_path):
    op = BlockCS(0.25, block=8, seed=4)
    y = torch.randn(1, 16, 2, 3)
    write_measurement(tmp_path / "y.npz", y, op)
    torch.testing.assert_close(read_measurement(tmp_path / "y.npz", CONFIG, op), y)
    with pytest.raises(InvalidArgumentError, match="expects sampling"):
        read_measurement(tmp_path / "y.npz", CONFIG, BlockCS(0.25, block=8, seed=5))


def test_a_measurement_at_a_higher_ratio_of_the_nested_basis_restores_at_a_lower_one(capsys, tmp_path, photo):
    assert run(capsys, "measure", "--model", "zoo:cs-0.25", photo, tmp_path / "y25.npz")[0] == 0
    stored = np.load(tmp_path / "y25.npz", allow_pickle=False)
    assert int(stored["rows"]) == 256 and len(stored["row_fingerprints"]) == 256
    code, out, err = run(capsys, "restore", "--measurement", "--model", "zoo:cs-0.10", tmp_path / "y25.npz", tmp_path / "a.npy")
    assert code == 0, err
    assert "holds 256 rows of a nested sampling basis whose first 102 are this model's: restoring with those 102" in out
    assert run(capsys, "measure", "--model", "zoo:cs-0.10", photo, tmp_path / "y10.npz")[0] == 0
    assert run(capsys, "restore", "--measurement", "--model", "zoo:cs-0.10", tmp_path / "y10.npz", tmp_path / "b.npy")[0] == 0
    assert np.abs(np.load(tmp_path / "a.npy") - np.load(tmp_path / "b.npy")).max() <= 1e-5  # the same 102 rows


def test_a_measurement_with_fewer_rows_or_other_rows_is_refused(capsys, tmp_path, photo, other_sampling):
    assert run(capsys, "measure", "--model", "zoo:cs-0.10", photo, tmp_path / "y10.npz")[0] == 0
    code, _, err = run(capsys, "restore", "--measurement", "--model", "zoo:cs-0.25", tmp_path / "y10.npz", tmp_path / "x.npy")
    assert code == 2 and "was taken with sampling" in err and "but this model expects sampling" in err
    assert run(capsys, "measure", "--model", other_sampling, photo, tmp_path / "other.npz")[0] == 0
    code, _, err = run(capsys, "restore", "--measurement", "--model", "zoo:cs-0.10", tmp_path / "other.npz", tmp_path / "x.npy")
    assert code == 2 and "was taken with sampling" in err
