"""Sampling matrices for block compressive sensing fitted to data, their fingerprints and export.

A PCA basis is the eigenvectors of the second-moment matrix E[x x^T] of image blocks, sorted by
falling eigenvalue. It is orthonormal and *nested*: its first m rows are the best m-row sampling
matrix for every m (in the linear mean-square sense), so one basis serves every ratio and a
measurement taken at a higher ratio truncates to a lower one (keep its first m channels). For
such a matrix the linear minimum-mean-square-error estimate of a block is x0 = Phi^T y.

>>> import torch
>>> basis = pca_basis([torch.rand(1, 32, 32) for _ in range(4)], block=8, stride=4)
>>> tuple(basis.shape)
(64, 64)
>>> bool(torch.allclose(basis @ basis.T, torch.eye(64), atol=1e-5))
True
>>> sampling_fingerprint(basis[:16]).startswith("sha256:")
True
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import check_int
from ..errors import InvalidArgumentError

__all__ = ["pca_basis", "sampling_fingerprint", "row_fingerprints", "export_patterns", "SAMPLING_SUFFIXES"]

SAMPLING_SUFFIXES = (".npy", ".mat")


@torch.no_grad()
def pca_basis(images: torch.Tensor | Sequence[torch.Tensor], block: int = 32, stride: int | None = None) -> torch.Tensor:
    """The block x block PCA basis of ``images`` (C x H x W tensors or one N x C x H x W tensor; every
    channel's blocks count): a block^2 x block^2 matrix whose rows are the eigenvectors of the blocks'
    second-moment matrix (not centred: the measurements must carry the mean too), the largest
    eigenvalue first, each row's sign fixed so that its largest entry is positive. ``stride``:
    the step between blocks (default block // 2). Deterministic: the same images give the same basis.
    """
    block = check_int(block, "block")
    stride = block // 2 if stride is None else check_int(stride, "stride")
    items = list(images)
    if not items or any(not isinstance(x, torch.Tensor) or x.dim() != 3 or min(x.shape[-2:]) < block for x in items):
        raise InvalidArgumentError(f"images must be C x H x W tensors of at least {block} x {block} pixels")
    n = block * block
    moment = torch.zeros(n, n, dtype=torch.float64)
    count = 0
    for x in items:
        patches = x.to(torch.float64).unfold(1, block, stride).unfold(2, block, stride)  # C x h x w x B x B
        rows = patches.reshape(-1, n)
        moment += rows.T @ rows
        count += rows.shape[0]
    values, vectors = torch.linalg.eigh(moment / count)
    basis = vectors.flip(1).T.contiguous()  # rows, largest eigenvalue first
    peak = basis.gather(1, basis.abs().argmax(dim=1, keepdim=True))
    return (basis * torch.sign(peak)).to(torch.get_default_dtype())


def sampling_fingerprint(phi: torch.Tensor) -> str:
    """"sha256:<hex>" of a sampling matrix's values rounded to float16 (so a float16-stored bundle
    and the float32 matrix it was made from agree), with its shape."""
    values = phi.detach().to("cpu", torch.float16).contiguous().numpy()
    digest = hashlib.sha256(f"{tuple(values.shape)}".encode())
    digest.update(values.astype("<f2").tobytes())
    return f"sha256:{digest.hexdigest()}"


def row_fingerprints(phi: torch.Tensor) -> list[str]:
    """A short fingerprint of each row of a sampling matrix (16 hex digits of the sha256 of its
    float16 values): a measurement that records them can be restored by a model whose matrix is
    its first m rows (a nested basis), and refused by any other.

    >>> basis = torch.linalg.qr(torch.randn(16, 16)).Q
    >>> row_fingerprints(basis)[:4] == row_fingerprints(basis[:4])
    True
    """
    values = phi.detach().to("cpu", torch.float16).contiguous().numpy().astype("<f2")
    return [hashlib.sha256(row.tobytes()).hexdigest()[:16] for row in values]


def export_patterns(phi: torch.Tensor, block: int, path: str | Path) -> Path:
    """Write the m rows of ``phi`` as m x block x block patterns (row-major, the pixel (i, j) of
    pattern k is phi[k, i * block + j]) to ``path``: .npy (float32) or .mat (variable ``patterns``,
    with ``fingerprint``), ready for a single-pixel camera's modulator. Written atomically."""
    from ..persistence.atomic import atomic_write  # file writing loads when patterns are exported, not with every network

    path = Path(path)
    if path.suffix.lower() not in SAMPLING_SUFFIXES:
        raise InvalidArgumentError(f"sampling patterns are written as .npy or .mat, got {path}")
    patterns = phi.detach().to("cpu", torch.float32).reshape(-1, block, block).numpy()
    with atomic_write(path) as f:
        if path.suffix.lower() == ".npy":
            np.save(f, patterns)
        else:
            from scipy.io import savemat

            savemat(f, {"patterns": patterns, "fingerprint": sampling_fingerprint(phi)})
    return path
