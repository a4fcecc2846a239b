"""Block compressive sensing: each B x B block of each channel is measured by one m x B^2 matrix.

The sampling matrix Phi is a parameter, so it can be trained jointly with the unfolded network.
``A`` is a strided convolution (kernel = the rows of Phi reshaped to B x B, stride B), so the
measurement keeps the block grid: y has shape N x (channels * m) x ceil(H / B) x ceil(W / B).
It and its transpose are computed as one matrix product on a block view of the image, which
equals ``F.conv2d(x_c, Phi.view(m, 1, B, B), stride=B)`` per channel and ``F.conv_transpose2d``
(up to rounding) and is faster on CPU (conv_transpose2d took about 5x longer at m = 512).

>>> import torch
>>> from lorun_peft.operators.cs import BlockCS
>>> op = BlockCS(0.25, block=8)               # m = round(0.25 * 64) = 16 measurements per block
>>> x = torch.rand(2, 1, 16, 16)
>>> y = op(x)                                  # simulate a measurement (noise_sigma=0 by default)
>>> y.shape
torch.Size([2, 16, 2, 2])
>>> op.A_adjoint(y).shape
torch.Size([2, 1, 16, 16])
>>> x_hat = op.prox_l2(torch.zeros_like(x), y, 0.5)
>>> x_hat.shape
torch.Size([2, 1, 16, 16])
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import check_int
from ..errors import InvalidArgumentError
from .base import LinearOperator, register_operator
from .sampling import export_patterns, pca_basis, sampling_fingerprint

__all__ = ["BlockCS"]

_INIT_NAMES = ("gaussian", "orthogonal")


@register_operator
class BlockCS(LinearOperator):
    """Block compressive sensing with a (learnable) sampling matrix Phi of shape m x block^2.

    Args:
        ratio: sampling ratio in (0, 1]; m = max(1, round(ratio * block^2)) measurements per block.
        block: block side B in pixels.
        channels: number of image channels. The SAME Phi measures every channel; the
            measurements of channel c are y[:, c*m:(c+1)*m].
        learnable: whether Phi requires gradients (trained with the network).
        init: "gaussian" (i.i.d. N(0, 1/B^2) entries), "orthogonal" (orthonormal rows), or a
            given matrix (torch tensor or numpy array) with block^2 columns, e.g. an ISTA-Net
            ``phi_0_25_1089.mat`` matrix (272 x 1089) for block=33. A column index j is the pixel
            (j // B, j % B) of the block (row-major, like numpy's ``reshape``). A given matrix may
            have m = floor or ceil of ratio * block^2 rows (ISTA-Net's ratio-1% matrix has 10 rows,
            not round(10.89) = 11). ``config()`` records it as init="matrix" plus
            ``measurements`` (m), and ``from_config`` rebuilds a zero matrix of that shape whose
            values then come from the state_dict.
        image_size: (H, W) of the images, or None. ``A`` zero-pads x at the bottom and right up
            to the block grid. ``A_adjoint`` returns the padded grid cropped to ``image_size``; with
            None it returns the whole grid (exactly the adjoint only when H and W are multiples of
            B). So for sizes that are not multiples of B set ``op.image_size = (H, W)`` (a settable
            attribute): ``A`` never sets it for you, and with it set ``A`` refuses other sizes.
        seed: seed of the gaussian/orthogonal initialisation (config + seed reproduces Phi).
        orthonormal: keep Phi's rows orthonormal while it trains: :meth:`project_` (called by
            ``lorun_peft.train`` after every optimizer step) maps it back to the nearest matrix
            with orthonormal rows. Start it from orthonormal rows (``init="orthogonal"`` or
            :meth:`fit_sampling`).

    A sampling matrix fitted to data: :meth:`fit_sampling` replaces Phi by the first m rows of the
    images' block PCA basis (:func:`~lorun_peft.operators.sampling.pca_basis`; nested, so one basis
    serves every ratio) and, with ``linear_estimate``, sets Q = Phi^T (for that matrix the linear
    MMSE estimate). ``sampling_fingerprint`` names the matrix; :meth:`export_sampling` writes its
    rows as m x B x B patterns for a single-pixel camera.

    ``prox_l2`` is exact and closed form (Woodbury, one m x m solve per kind of block), also at
    sizes that are not multiples of B: the zero padding is not a variable, so edge blocks use only
    the columns of Phi of their pixels inside the image. ``initial_estimate(y)`` is A^T y (the
    base class's; stable for any Phi, including rank-deficient or learned ones), or with
    ``linear_estimate=True`` a learned linear map per block, x_b = Q y_b (ISTA-Net+'s Q_init):
    Q starts as the pseudo-inverse of Phi, :meth:`fit_initial_estimate` fits it by least squares
    to training images (the linear minimum-mean-square-error estimate), and it is trained with
    the network when ``learnable``. Measured on Set11 at ratio 0.25 the fitted estimate scores
    about 27 dB where A^T y scores about 7 dB; training Phi or Q with Adam at lr 1e-3 next to the
    adapters lowered the validation PSNR (benchmarks/zoo.py), so the zoo keeps both fixed.

    >>> op = BlockCS(0.1, block=32)
    >>> op.measurements, tuple(op.phi.shape)
    (102, (102, 1024))
    >>> op.image_size = (33, 50)                  # sides not multiples of 32: say the image size
    >>> y = op.A(torch.rand(1, 1, 33, 50))
    >>> tuple(y.shape), tuple(op.A_adjoint(y).shape)
    ((1, 102, 2, 2), (1, 1, 33, 50))
    """

    def __init__(
        self,
        ratio: float,
        block: int = 32,
        channels: int = 1,
        learnable: bool = True,
        init: str | torch.Tensor | np.ndarray = "gaussian",
        image_size: Sequence[int] | None = None,
        seed: int = 0,
        linear_estimate: bool = False,
        orthonormal: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or not 0 < ratio <= 1:
            raise InvalidArgumentError(f"ratio must be a number in (0, 1], got {ratio!r}")
        self.block = check_int(block, "block")
        self.channels = check_int(channels, "channels")
        if not isinstance(learnable, bool):
            raise InvalidArgumentError(f"learnable must be True or False, got {learnable!r}")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise InvalidArgumentError(f"seed must be an integer, got {seed!r}")
        if not isinstance(orthonormal, bool):
            raise InvalidArgumentError(f"orthonormal must be True or False, got {orthonormal!r}")
        self.ratio = float(ratio)
        self.learnable = learnable
        self.orthonormal = orthonormal
        self.seed = int(seed)
        self.image_size = image_size  # validated by the property setter

        n = self.block**2
        if isinstance(init, str):
            if init not in _INIT_NAMES:
                raise InvalidArgumentError(
                    f"init must be one of {_INIT_NAMES} or a matrix with block^2 = {n} columns, got {init!r}"
                )
            self.init = init
            matrix = _init_matrix(init, max(1, round(self.ratio * n)), n, self.seed)
        else:
            self.init = "matrix"
            matrix = self._check_matrix(init)
        self.phi = nn.Parameter(matrix, requires_grad=learnable)
        if not isinstance(linear_estimate, bool):
            raise InvalidArgumentError(f"linear_estimate must be True or False, got {linear_estimate!r}")
        # Q (block^2 x m): x_block = Q y_block; the pseudo-inverse of Phi until fitted to data.
        self.q = nn.Parameter(torch.linalg.pinv(matrix), requires_grad=learnable) if linear_estimate else None

    # ----------------------------------------------------------------- properties and config
    @property
    def measurements(self) -> int:
        """m, the number of measurements per block and channel."""
        return self.phi.shape[0]

    @property
    def image_size(self) -> tuple[int, int] | None:
        """(H, W) of the images ``A_adjoint`` returns; None returns the whole block grid."""
        return self._image_size

    @image_size.setter
    def image_size(self, size: Sequence[int] | None) -> None:
        if size is not None:
            if isinstance(size, (str, bytes)) or not isinstance(size, Sequence) or len(size) != 2:
                raise InvalidArgumentError(f"image_size must be None or (H, W), got {size!r}")
            size = (check_int(size[0], "image_size"), check_int(size[1], "image_size"))
            if min(size) < self.block:
                raise InvalidArgumentError(f"image_size {size} is smaller than one {self.block} x {self.block} block")
        self._image_size = size

    def extra_repr(self) -> str:
        return (
            f"ratio={self.ratio}, block={self.block}, measurements={self.measurements}, "
            f"channels={self.channels}, init={self.init!r}, image_size={self.image_size}"
        )

    def _config_args(self) -> dict[str, Any]:
        return {
            "ratio": self.ratio,
            "block": self.block,
            "channels": self.channels,
            "learnable": self.learnable,
            "init": self.init,
            "image_size": None if self.image_size is None else list(self.image_size),
            "seed": self.seed,
            "measurements": self.measurements,
            "linear_estimate": self.q is not None,
            "orthonormal": self.orthonormal,
        }

    @property
    def sampling_fingerprint(self) -> str:
        """"sha256:..." of Phi (its float16 values and shape): which sampling a measurement needs."""
        return sampling_fingerprint(self.phi)

    @classmethod
    def from_config(cls, kwargs: dict[str, Any]) -> "BlockCS":
        """Rebuild from ``config()``; a given matrix is replaced by zeros of the right shape,
        whose values then come from the state_dict."""
        kwargs = dict(kwargs)
        measurements = kwargs.pop("measurements", None)
        if kwargs.get("init") == "matrix":
            block = check_int(kwargs.get("block", 32), "block")
            kwargs["init"] = torch.zeros(check_int(measurements, "measurements"), block**2)
        op = cls(**kwargs)
        if measurements is not None and measurements != op.measurements:
            raise InvalidArgumentError(
                f"config has measurements={measurements!r} but ratio and block give {op.measurements}"
            )
        return op

    def _check_matrix(self, matrix: torch.Tensor | np.ndarray) -> torch.Tensor:
        if isinstance(matrix, np.ndarray):
            if not np.issubdtype(matrix.dtype, np.number):
                raise InvalidArgumentError(f"init matrix must hold numbers, got dtype {matrix.dtype}")
            matrix = torch.from_numpy(np.asarray(matrix, dtype=np.float64))
        if not isinstance(matrix, torch.Tensor):
            raise InvalidArgumentError(
                f"init must be one of {_INIT_NAMES}, a torch tensor or a numpy array, got {type(matrix).__name__}"
            )
        n = self.block**2
        if matrix.dim() != 2 or matrix.shape[1] != n or matrix.shape[0] < 1:
            raise InvalidArgumentError(
                f"init matrix must have shape (m, block^2) = (m, {n}) for block={self.block}, "
                f"got {tuple(matrix.shape)}"
            )
        m = matrix.shape[0]
        if abs(m - self.ratio * n) >= 1:
            raise InvalidArgumentError(
                f"init matrix has {m} rows but ratio={self.ratio} with block={self.block} "
                f"asks for about {self.ratio * n:.2f} measurements per block"
            )
        return matrix.detach().to(torch.get_default_dtype()).clone()

    # ------------------------------------------------------------------------ the operator
    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Measure every B x B block (zero padding at the bottom/right): N x C*m x ceil(H/B) x ceil(W/B)."""
        self._check_image(x, "x")
        return self._measure(x)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Phi^T per block; the grid is cropped to ``image_size`` when it is set."""
        self._check_measurement(y, "y", self.image_size)
        return self._spread(y, self.image_size)

    def initial_estimate(self, y: torch.Tensor) -> torch.Tensor:
        """x_0 = Q y per block with ``linear_estimate=True``, else A^T y."""
        self._check_measurement(y, "y", self.image_size)
        return self._spread(y, self.image_size, None if self.q is None else self.q.T)

    @torch.no_grad()
    def fit_initial_estimate(
        self, images: torch.Tensor | Sequence[torch.Tensor], blocks: int = 20000, ridge: float = 1e-6, seed: int = 0
    ) -> "BlockCS":
        """Fit Q by ridge regression, Q = X Y^T (Y Y^T + ridge * blocks * I)^-1, on ``blocks`` random blocks of
        ``images`` (C x H x W tensors or one N x C x H x W tensor; every channel's blocks count)
        measured by the current Phi: the linear minimum-mean-square-error estimate of a block from
        its measurements. Needs ``linear_estimate=True``. Returns self.

        >>> op = BlockCS(0.25, block=8, linear_estimate=True)
        >>> _ = op.fit_initial_estimate(torch.rand(4, 1, 32, 32), blocks=500)
        >>> tuple(op.q.shape)
        (64, 16)
        """
        if self.q is None:
            raise InvalidArgumentError("fit_initial_estimate needs BlockCS(..., linear_estimate=True)")
        check_int(blocks, "blocks")
        b = self.block
        items = list(images)
        if not items or any(not isinstance(x, torch.Tensor) or x.dim() != 3 or min(x.shape[-2:]) < b for x in items):
            raise InvalidArgumentError(f"images must be C x H x W tensors of at least {b} x {b} pixels")
        generator = torch.Generator().manual_seed(seed)
        columns = []
        for _ in range(blocks):
            x = items[int(torch.randint(len(items), (1,), generator=generator))]
            c = int(torch.randint(x.shape[0], (1,), generator=generator))
            top = int(torch.randint(x.shape[1] - b + 1, (1,), generator=generator))
            left = int(torch.randint(x.shape[2] - b + 1, (1,), generator=generator))
            columns.append(x[c, top : top + b, left : left + b].reshape(-1))
        truth = torch.stack(columns, dim=1).to(torch.float64)  # n x blocks
        phi = self.phi.detach().to(torch.float64)
        measured = phi @ truth  # m x blocks
        gram = measured @ measured.T + ridge * blocks * torch.eye(self.measurements, dtype=torch.float64)
        q = torch.linalg.solve(gram, measured @ truth.T).T  # (X Y^T)(Y Y^T + r)^-1, gram symmetric
        self.q.copy_(q.to(self.q.dtype))
        return self

    @torch.no_grad()
    def fit_sampling(self, images: torch.Tensor | Sequence[torch.Tensor], stride: int | None = None) -> "BlockCS":
        """Phi := the first m rows of the block PCA basis of ``images`` (see
        :func:`~lorun_peft.operators.sampling.pca_basis`), and Q := Phi^T with ``linear_estimate``.
        Returns self; ``config()`` then records init="matrix" (the values live in the state_dict).

        >>> op = BlockCS(0.25, block=8, linear_estimate=True).fit_sampling(torch.rand(4, 1, 32, 32))
        >>> bool(torch.allclose(op.phi @ op.phi.T, torch.eye(16), atol=1e-5))
        True
        """
        self.phi.copy_(pca_basis(images, self.block, stride)[: self.measurements])
        self.init = "matrix"
        if self.q is not None:
            self.q.copy_(self.phi.T)
        return self

    @torch.no_grad()
    def project_(self) -> None:
        """With ``orthonormal=True``: Phi := U V^T from its SVD (the nearest matrix with orthonormal
        rows, in Frobenius norm). ``lorun_peft.train`` calls it after every optimizer step."""
        if self.orthonormal and self.phi.requires_grad:
            u, _, vh = torch.linalg.svd(self.phi.to(torch.float64), full_matrices=False)
            self.phi.copy_((u @ vh).to(self.phi.dtype))

    def export_sampling(self, path: str | Path) -> Path:
        """Write Phi's rows as an m x B x B array (.npy, or .mat with ``patterns`` and ``fingerprint``)."""
        return export_patterns(self.phi, self.block, path)

    def prox_l2(self, z: torch.Tensor, y: torch.Tensor, gamma: float | torch.Tensor) -> torch.Tensor:
        """argmin_x gamma/2 ||A x - y||^2 + 1/2 ||x - z||^2 in closed form.

        The domain is z's H x W (which must equal ``image_size`` if that is set). Per block the
        solution is (I + gamma Phi_S^T Phi_S)^-1 r with r = z + gamma A^T y, where Phi_S keeps the
        columns of the block's pixels inside the image (all of them except in the last block row
        and column when B does not divide H or W). Woodbury turns it into
            x = r - gamma Phi_S^T (I_m + gamma Phi_S Phi_S^T)^-1 Phi_S r.
        With r zero-padded, Phi_S r and Phi_S^T v are the ordinary block products (then cropped), so
        only the m x m Gram matrix Phi_S Phi_S^T differs between at most four kinds of block.

        gamma: a python number, a 0-dim (or one-element) tensor, or one value per sample (N,).
        """
        self._check_image(z, "z")
        size = tuple(z.shape[-2:])
        self._check_measurement(y, "y", size, batch=z.shape[0])
        gamma = self._check_gamma(gamma, z.shape[0])
        g_img = gamma if gamma.dim() == 0 else gamma.view(-1, 1, 1, 1)

        r = z + g_img * self._spread(y, size)
        u = self._measure(r)  # Phi_S r per block, since the padding is zero
        n, _, h, w = u.shape
        u = u.view(n, self.channels, self.measurements, h, w)
        v = torch.empty_like(u)
        kinds = self._block_kinds(size)
        # Phi trains (its Gram matrices carry gradients) or torch.compile traces (the cache's checks would break the graph)
        if (self.phi.requires_grad and torch.is_grad_enabled()) or torch.compiler.is_compiling():
            for (rows, cols, _, _), gram in zip(kinds, self._grams(kinds)):
                v[..., rows, cols] = _solve_blocks(gram, gamma, u[..., rows, cols])
        else:  # Phi is fixed here: its Gram matrices are factored once per version of Phi, for any gamma
            for (rows, cols, _, _), (values, vectors) in zip(kinds, self._factored_grams(kinds)):
                v[..., rows, cols] = _solve_factored(values, vectors, gamma, u[..., rows, cols])
        return r - g_img * self._spread(v.view(n, -1, h, w), size)

    # ------------------------------------------------------------------------------ helpers
    def _measure(self, x: torch.Tensor) -> torch.Tensor:
        """Zero-pad to the block grid, then Phi times every block (the strided convolution)."""
        n, c, height, width = x.shape
        b, m = self.block, self.measurements
        x = F.pad(x, (0, -width % b, 0, -height % b))
        h, w = x.shape[-2] // b, x.shape[-1] // b
        blocks = x.reshape(n, c, h, b, w, b).transpose(3, 4).reshape(n, c, h * w, b * b)
        return (self.phi @ blocks.transpose(-1, -2)).reshape(n, c * m, h, w)

    def _spread(self, y: torch.Tensor, size: Sequence[int] | None, matrix: torch.Tensor | None = None) -> torch.Tensor:
        """Phi^T (or ``matrix``^T, m x block^2) times every block's measurements (the transposed
        convolution), cropped to ``size``."""
        n, _, h, w = y.shape
        b, c = self.block, self.channels
        blocks = y.reshape(n, c, self.measurements, h * w).transpose(-1, -2) @ (self.phi if matrix is None else matrix)
        x = blocks.reshape(n, c, h, w, b, b).transpose(3, 4).reshape(n, c, h * b, w * b)
        if size is not None and tuple(size) != tuple(x.shape[-2:]):
            x = x[..., : size[0], : size[1]]
        return x

    def _block_kinds(self, size: tuple[int, int]) -> list[tuple[slice, slice, int, int]]:
        """(block rows, block cols, valid pixel rows, valid pixel cols) for each kind of block."""
        b = self.block
        h_full, h_rest = divmod(size[0], b)
        w_full, w_rest = divmod(size[1], b)
        row_kinds = [(slice(0, h_full), b)] if h_full else []
        col_kinds = [(slice(0, w_full), b)] if w_full else []
        if h_rest:
            row_kinds.append((slice(h_full, h_full + 1), h_rest))
        if w_rest:
            col_kinds.append((slice(w_full, w_full + 1), w_rest))
        return [(rows, cols, vh, vw) for rows, vh in row_kinds for cols, vw in col_kinds]

    def _grams(self, kinds: list[tuple[slice, slice, int, int]]) -> list[torch.Tensor]:
        """Phi_S Phi_S^T for each kind of block: directly when few pixels are inside the image,
        else as the full Gram matrix minus the part of the pixels left out (cheaper at the edges)."""
        b, m = self.block, self.measurements
        phi = self.phi.view(m, b, b)
        full = None
        grams = []
        for _, _, valid_h, valid_w in kinds:
            if 2 * valid_h * valid_w <= b * b:
                inside = phi[:, :valid_h, :valid_w].reshape(m, -1)
                grams.append(inside @ inside.T)
                continue
            if full is None:
                full = phi.reshape(m, -1) @ phi.reshape(m, -1).T
            below = phi[:, valid_h:, :].reshape(m, -1)  # rows of the block below the image
            right = phi[:, :valid_h, valid_w:].reshape(m, -1)  # columns right of it
            grams.append(full - below @ below.T - right @ right.T)
        return grams

    def _factored_grams(self, kinds: list[tuple[slice, slice, int, int]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Eigendecompositions G = V diag(lambda) V^T of :meth:`_grams` (in at least float32), kept
        until Phi changes: the same Parameter object with the same version counter (bumped by every
        in-place update, an optimizer step and load_state_dict included), storage, dtype, device and
        block kinds."""
        key = (self.phi._version, self.phi.data_ptr(), self.phi.dtype, self.phi.device, [k[2:] for k in kinds])
        cached = getattr(self, "_gram_factors", None)  # (the Phi it was made from, key, factors)
        if cached is not None and cached[0] is self.phi and cached[1] == key:
            return cached[2]
        with torch.no_grad():
            factors = [torch.linalg.eigh(g.to(torch.promote_types(g.dtype, torch.float32))) for g in self._grams(kinds)]
        self._gram_factors = (self.phi, key, factors)  # holding Phi keeps its storage from being reused
        return factors

    def _check_image(self, x: torch.Tensor, name: str) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != self.channels:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InvalidArgumentError(
                f"{name} must be a tensor N x {self.channels} x H x W (channels={self.channels}), got {shape}"
            )
        if min(x.shape[-2:]) < self.block:
            raise InvalidArgumentError(
                f"{name} is {tuple(x.shape[-2:])}, smaller than one {self.block} x {self.block} block; "
                "use a smaller block or a larger image"
            )
        if self.image_size is not None and tuple(x.shape[-2:]) != self.image_size:
            raise InvalidArgumentError(
                f"{name} is {tuple(x.shape[-2:])} but image_size is {self.image_size}; "
                "set op.image_size to the new size (or None) first"
            )

    def _check_measurement(
        self, y: torch.Tensor, name: str, size: Sequence[int] | None, batch: int | None = None
    ) -> None:
        want_c = self.channels * self.measurements
        if not isinstance(y, torch.Tensor) or y.dim() != 4 or y.shape[1] != want_c:
            shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise InvalidArgumentError(
                f"{name} must be a tensor N x {want_c} x h x w (channels * m = {self.channels} * "
                f"{self.measurements}), got {shape}"
            )
        if batch is not None and y.shape[0] != batch:
            raise InvalidArgumentError(f"{name} has batch size {y.shape[0]}, expected {batch}")
        if size is not None:
            grid = (math.ceil(size[0] / self.block), math.ceil(size[1] / self.block))
            if tuple(y.shape[-2:]) != grid:
                raise InvalidArgumentError(
                    f"{name} has a block grid of {tuple(y.shape[-2:])} but images of size {tuple(size)} "
                    f"with block={self.block} give {grid}"
                )

    def _check_gamma(self, gamma: float | torch.Tensor, batch: int) -> torch.Tensor:
        if isinstance(gamma, numbers.Real) and not isinstance(gamma, bool):
            if not gamma >= 0:
                raise InvalidArgumentError(f"gamma must be >= 0, got {gamma!r}")
            return torch.tensor(float(gamma), dtype=self.phi.dtype, device=self.phi.device)
        if isinstance(gamma, torch.Tensor):
            if gamma.numel() == 1:
                return gamma.reshape(())
            if gamma.numel() == batch:
                return gamma.reshape(batch)
        shape = tuple(gamma.shape) if isinstance(gamma, torch.Tensor) else type(gamma).__name__
        raise InvalidArgumentError(f"gamma must be a number, a one-element tensor or one value per sample, got {shape}")


def _solve_blocks(gram: torch.Tensor, gamma: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Solve (I + gamma * gram) v = u for every block of u (N x C x m x h x w)."""
    n, c, m, h, w = u.shape
    dtype = u.dtype
    work = torch.promote_types(gram.dtype, torch.float32)  # LU has no half-precision kernels: solve in float32
    gram, gamma, u = gram.to(work), gamma.to(work), u.to(work)
    eye = torch.eye(m, dtype=work, device=gram.device)
    if gamma.dim() == 0:  # one m x m system, every block of every sample as a right-hand side
        rhs = u.permute(2, 0, 1, 3, 4).reshape(m, -1)
        v = torch.linalg.solve(eye + gamma * gram, rhs)
        return v.reshape(m, n, c, h, w).permute(1, 2, 0, 3, 4).to(dtype)
    rhs = u.permute(0, 2, 1, 3, 4).reshape(n, m, -1)  # one system per sample
    v = torch.linalg.solve(eye + gamma.view(n, 1, 1) * gram, rhs)
    return v.reshape(n, m, c, h, w).permute(0, 2, 1, 3, 4).to(dtype)


def _solve_factored(values: torch.Tensor, vectors: torch.Tensor, gamma: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Solve (I + gamma * G) v = u for every block of u (N x C x m x h x w) with G = V diag(values) V^T:
    v = V ((V^T u) / (1 + gamma * values)), in the factors' precision, returned in u's dtype."""
    n, c, m, h, w = u.shape
    work = vectors.dtype
    coefficients = torch.einsum("ji,ncjhw->ncihw", vectors, u.to(work))
    scale = 1 + gamma.to(work).reshape(-1, 1, 1, 1, 1) * values.view(1, 1, m, 1, 1)
    return torch.einsum("ij,ncjhw->ncihw", vectors, coefficients / scale).to(u.dtype)


def _init_matrix(kind: str, m: int, n: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if kind == "gaussian":
        matrix = torch.randn(m, n, generator=generator, dtype=torch.float64) / math.sqrt(n)
    else:  # orthogonal rows from the QR decomposition of a gaussian matrix (signs fixed)
        q, r = torch.linalg.qr(torch.randn(n, m, generator=generator, dtype=torch.float64))
        matrix = (q * torch.where(torch.diagonal(r) < 0, -1.0, 1.0)).T
    return matrix.to(torch.get_default_dtype()).contiguous()

