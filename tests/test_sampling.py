"""Sampling matrices fitted to data (lorun_peft/operators/sampling.py, BlockCS.fit_sampling / project_),
their export, and training the matrix with its own learning rate and orthonormal rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lorun_peft import train, unfold
from lorun_peft.errors import InvalidArgumentError
from lorun_peft.operators.base import operator_from_config
from lorun_peft.operators.cs import BlockCS
from lorun_peft.operators.sampling import export_patterns, pca_basis, sampling_fingerprint
from operator_checks import check_adjoint, check_prox


def smooth_images(n: int = 6, size: int = 32, seed: int = 0) -> list[torch.Tensor]:
    """Images with structure (blurred noise plus a ramp), so the PCA spectrum is far from flat."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(n, 1, size, size, generator=g)
    blurred = nn.functional.avg_pool2d(nn.functional.pad(noise, (2, 2, 2, 2), mode="reflect"), 5, stride=1)
    ramp = torch.linspace(0, 1, size).view(1, 1, 1, size)
    return list((0.5 * blurred + 0.5 * ramp).clamp(0, 1))


def test_pca_basis_is_orthonormal_sorted_and_deterministic() -> None:
    images = smooth_images()
    basis = pca_basis(images, block=8, stride=4)
    assert basis.shape == (64, 64)
    torch.testing.assert_close(basis @ basis.T, torch.eye(64), atol=1e-5, rtol=0)
    blocks = torch.cat([x.unfold(1, 8, 4).unfold(2, 8, 4).reshape(-1, 64) for x in images])
    energy = ((blocks @ basis.T) ** 2).mean(dim=0)  # the second moment along each row
    assert bool((energy[:-1] >= energy[1:] - 1e-6).all()), "rows are not sorted by falling eigenvalue"
    torch.testing.assert_close(pca_basis(images, block=8, stride=4), basis)
    peaks = basis.gather(1, basis.abs().argmax(dim=1, keepdim=True))
    assert bool((peaks > 0).all()), "each row's largest entry is positive"


def test_pca_rows_beat_random_rows_and_are_nested() -> None:
    """The first m rows keep more of the blocks' energy than m random orthonormal rows, and the
    operator at a lower ratio uses exactly the first rows of the one at a higher ratio."""
    images = smooth_images()
    low = BlockCS(0.25, block=8, linear_estimate=True).fit_sampling(images)
    high = BlockCS(0.5, block=8, linear_estimate=True).fit_sampling(images)
    torch.testing.assert_close(high.phi[: low.measurements], low.phi)
    x = torch.stack(images)
    y_high = high.A(x)
    torch.testing.assert_close(low.A(x), y_high[:, : low.measurements])  # truncate a measurement to a lower ratio
    rand = BlockCS(0.25, block=8, init="orthogonal", linear_estimate=True).fit_initial_estimate(images, blocks=2000)
    with torch.no_grad():
        errors = [float(((op.initial_estimate(op.A(x)) - x) ** 2).mean()) for op in (low, rand)]
    assert errors[0] < 0.5 * errors[1]


def test_fit_sampling_sets_q_to_the_transpose_and_keeps_operator_properties() -> None:
    op = BlockCS(0.25, block=8, linear_estimate=True).fit_sampling(smooth_images())
    torch.testing.assert_close(op.q, op.phi.T)
    assert op.config()["init"] == "matrix"
    op64 = op.double()
    with torch.no_grad():
        check_adjoint(op64, (2, 1, 16, 24))
    check_prox(op64, (2, 1, 16, 24))


def test_fitted_operator_round_trips_through_config_and_state_dict() -> None:
    op = BlockCS(0.1, block=8, linear_estimate=True, orthonormal=True).fit_sampling(smooth_images())
    copy = operator_from_config(op.config())
    copy.load_state_dict(op.state_dict())
    assert copy.orthonormal and copy.sampling_fingerprint == op.sampling_fingerprint
    x = torch.rand(1, 1, 16, 16)
    torch.testing.assert_close(copy.initial_estimate(copy.A(x)), op.initial_estimate(op.A(x)))


def test_old_configs_without_orthonormal_load() -> None:
    config = BlockCS(0.25, block=8).config()
    del config["orthonormal"]
    assert operator_from_config(config).orthonormal is False


def test_fingerprint_survives_float16_storage_and_tells_matrices_apart() -> None:
    op = BlockCS(0.25, block=8).fit_sampling(smooth_images())
    stored = op.phi.detach().half().float()
    assert sampling_fingerprint(stored) == op.sampling_fingerprint
    assert sampling_fingerprint(op.phi[:-1]) != op.sampling_fingerprint
    assert BlockCS(0.25, block=8, seed=1).sampling_fingerprint != BlockCS(0.25, block=8, seed=2).sampling_fingerprint


@pytest.mark.parametrize("suffix", [".npy", ".mat"])
def test_export_patterns_round_trip(tmp_path, suffix: str) -> None:
    op = BlockCS(0.25, block=8).fit_sampling(smooth_images())
    path = op.export_sampling(tmp_path / f"patterns{suffix}")
    if suffix == ".npy":
        patterns = np.load(path, allow_pickle=False)
    else:
        from scipy.io import loadmat

        contents = loadmat(str(path))
        patterns = contents["patterns"]
        assert str(contents["fingerprint"][0]) == op.sampling_fingerprint
    assert patterns.shape == (16, 8, 8) and patterns.dtype == np.float32
    # pattern k at pixel (i, j) is row k at column i * B + j: a block measured with the patterns equals A
    x = torch.rand(1, 1, 8, 8)
    by_patterns = (torch.from_numpy(patterns) * x[0, 0]).sum(dim=(-2, -1))
    torch.testing.assert_close(by_patterns, op.A(x).view(-1), atol=1e-5, rtol=1e-5)


def test_project_restores_orthonormal_rows_and_only_when_asked() -> None:
    op = BlockCS(0.25, block=8, init="orthogonal", orthonormal=True)
    with torch.no_grad():
        op.phi.add_(0.1 * torch.randn_like(op.phi))
    op.project_()
    torch.testing.assert_close(op.phi @ op.phi.T, torch.eye(16), atol=1e-5, rtol=0)
    free = BlockCS(0.25, block=8, init="gaussian")
    before = free.phi.detach().clone()
    free.project_()
    torch.testing.assert_close(free.phi, before)


def test_training_keeps_rows_orthonormal_at_the_operator_learning_rate() -> None:
    op = BlockCS(0.25, block=8, init="orthogonal", orthonormal=True)
    start = op.phi.detach().clone()
    net = unfold(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1)), op, K=2)
    train(net, torch.rand(8, 1, 16, 16), steps=5, batch_size=2, lr=1e-3, operator_lr=1e-2, progress=False)
    assert float((op.phi.detach() - start).norm()) > 1e-4, "the matrix did not train"
    torch.testing.assert_close(op.phi @ op.phi.T, torch.eye(16), atol=1e-5, rtol=0)


def test_operator_learning_rate_is_its_own_group() -> None:
    """A tiny operator_lr moves the matrix far less than the same run at the network's lr."""
    changes = []
    for operator_lr in (1e-2, 1e-6):
        op = BlockCS(0.25, block=8, init="orthogonal", seed=3)
        start = op.phi.detach().clone()
        net = unfold(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1)), op, K=2)
        train(net, torch.rand(8, 1, 16, 16), steps=3, batch_size=2, lr=1e-2, operator_lr=operator_lr, progress=False)
        changes.append(float((op.phi.detach() - start).abs().max()))
    assert changes[1] < 1e-3 * changes[0]


def test_time_limit_stops_checkpointed_and_resumes(tmp_path) -> None:
    def network() -> nn.Module:
        torch.manual_seed(0)
        return unfold(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1)), BlockCS(0.25, block=8, seed=1), K=2)

    data = torch.rand(8, 1, 16, 16)
    first = train(network(), data, steps=10**6, batch_size=2, progress=False, checkpoint_dir=tmp_path, time_limit=0.3)
    assert 0 < first.step < 10**6 and first.checkpoint is not None
    again = train(network(), data, steps=first.step + 2, batch_size=2, progress=False, checkpoint_dir=tmp_path)
    assert again.step == first.step + 2 and again.losses[: first.step] == first.losses


@pytest.mark.parametrize("name, value", [("time_limit", 0), ("time_limit", -1.0), ("time_limit", True),
                                          ("operator_lr", 0.0), ("operator_lr", "1e-3")])
def test_bad_training_options(name: str, value: object) -> None:
    net = unfold(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1)), BlockCS(0.25, block=8), K=2)
    with pytest.raises(InvalidArgumentError, match=name):
        train(net, torch.rand(4, 1, 16, 16), steps=1, batch_size=2, progress=False, **{name: value})


def test_bad_sampling_inputs(tmp_path) -> None:
    op = BlockCS(0.25, block=8)
    with pytest.raises(InvalidArgumentError, match="at least 8 x 8"):
        op.fit_sampling([torch.rand(1, 4, 4)])
    with pytest.raises(InvalidArgumentError, match="stride must be an int"):
        pca_basis(smooth_images(), block=8, stride=0)
    with pytest.raises(InvalidArgumentError, match=r"\.npy or \.mat"):
        export_patterns(op.phi, 8, tmp_path / "patterns.txt")
    with pytest.raises(InvalidArgumentError, match="orthonormal must be True or False"):
        BlockCS(0.25, block=8, orthonormal="yes")
