"""Small models and operators defined here so the core tests need nothing else."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

torch.set_num_threads(1)  # tiny tensors: one thread is as fast and immune to oversubscription
# Inference runs in PyTorch (channels-last copies) unless a test asks for the onnxruntime engine:
# preparing it exports every test network once (seconds each) and writes into the user's cache.
# tests/test_onnx_engine.py covers the engine, the default outside the tests.
os.environ.setdefault("LORUN_ENGINE", "eager")

# Files whose tests fork children that train, then the files that export to ONNX, in this order, in
# one process: a process that has exported aborts the autograd of children it forks ("Invalid
# thread pool" from torch's pthreadpool).
FORKS_THEN_EXPORTS = ("tests/test_bundle.py", "tests/test_faults.py", "tests/test_onnx_export.py", "tests/test_onnx_engine.py",
                      "lorun_peft/export/")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist's ``--dist loadgroup`` (the addopts) every file runs whole in one worker,
    module fixtures built once, as ``--dist loadfile`` would run it; FORKS_THEN_EXPORTS share one
    worker, in collection order (tests/ before the package's doctests)."""
    for item in items:
        path = Path(os.path.relpath(item.path, config.rootpath)).as_posix()  # (a file outside the root: "../...")
        item.add_marker(pytest.mark.xdist_group("forks-then-exports" if path.startswith(FORKS_THEN_EXPORTS) else path))


class TinyDenoiser(nn.Module):
    """conv-relu-conv-relu-conv with a residual; 3 adaptable Conv2d layers."""

    def __init__(self, channels: int = 1, width: int = 8) -> None:
        super().__init__()
        self.head = nn.Conv2d(channels, width, 3, padding=1)
        self.body = nn.Conv2d(width, width, 3, padding=1)
        self.tail = nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.tail(torch.relu(self.body(torch.relu(self.head(x)))))


class SigmaDenoiser(TinyDenoiser):
    """Takes a per-sample noise level like deepinv denoisers: forward(x, sigma)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen_sigma: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.seen_sigma = sigma
        return super().forward(x) * (1 + 0 * sigma.view(-1, 1, 1, 1))


class MatrixOperator(nn.Module):
    """y = Phi vec(x) for a fixed random Gaussian matrix over a C x H x W image."""

    def __init__(self, shape=(1, 8, 8), m: int = 24, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        n = shape[0] * shape[1] * shape[2]
        self.shape = shape
        self.register_buffer("phi", torch.randn(m, n, generator=g) / n**0.5)

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        return x.flatten(1) @ self.phi.T

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        return (y @ self.phi).view(-1, *self.shape)


class Interrupt(Exception):
    """Raised by :func:`interrupt_after` to simulate a crash in the middle of training."""


def interrupt_after(net: nn.Module, calls: int):
    """Make ``net``'s forward raise Interrupt after ``calls`` calls; returns the hook handle."""
    count = {"n": 0}

    def hook(module, args):
        count["n"] += 1
        if count["n"] > calls:
            raise Interrupt

    return net.register_forward_pre_hook(hook)


@pytest.fixture
def operator() -> MatrixOperator:
    return MatrixOperator()


@pytest.fixture
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    smooth = torch.nn.functional.avg_pool2d(torch.rand(16, 1, 10, 10, generator=g), 3, 1)
    return smooth


@pytest.fixture(scope="module")
def stand_in_data(tmp_path_factory):
    """A stand-in for the shared data folder (tests never need it): train400/ with 13 smooth
    96 x 96 images, of which the training scripts hold the last 3 out to validate."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("data")
    (root / "train400").mkdir()
    g = np.random.default_rng(0)
    for i in range(13):
        a = np.cumsum(np.cumsum(g.normal(0, 1, (96, 96)), 0), 1)
        Image.fromarray(((a - a.min()) / np.ptp(a) * 255).astype(np.uint8)).save(root / "train400" / f"test_{i:03d}.png")
    return root
