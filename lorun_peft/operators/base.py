"""The operator protocol every data step relies on (deepinv's names, so a deepinv
``LinearPhysics`` plugs in unchanged), and a base class that fills in the optional parts.

An operator needs ``A(x)`` and ``A_adjoint(y)``; it may offer ``prox_l2(z, y, gamma)`` =
argmin_x gamma/2 ||A x - y||^2 + 1/2 ||x - z||^2 and ``initial_estimate(y)``.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from ..errors import IncompatibleBundleError, InvalidArgumentError
from .linalg import conjugate_gradient
from .physics import is_deepinv_physics, physics_config, physics_from_config

__all__ = ["LinearOperator", "register_operator", "operator_from_config", "describe_operator", "OPERATORS"]

OPERATORS: dict[str, type["LinearOperator"]] = {}


def register_operator(cls: type["LinearOperator"]) -> type["LinearOperator"]:
    """Class decorator: make ``cls`` rebuildable from its ``config()`` by name."""
    OPERATORS[cls.__name__] = cls
    return cls


def operator_from_config(config: dict[str, Any], state: Mapping[str, torch.Tensor] | None = None) -> "LinearOperator":
    """Rebuild an operator from ``op.config()`` (its learnable state comes from its state_dict).
    A deepinv physics (``"type": "deepinv"``, see :mod:`lorun_peft.operators.physics`) is built
    from its config and ``state``, its saved state_dict.

    >>> from lorun_peft.operators import BlockCS
    >>> op = BlockCS(0.25, block=8)
    >>> operator_from_config(op.config()).config() == op.config()
    True
    """
    if not isinstance(config, dict) or "type" not in config:
        raise InvalidArgumentError(f"operator config must be a dict with a 'type' key, got {config!r}")
    kind = config["type"]
    if kind == "deepinv":
        return physics_from_config(config, state)
    if kind not in OPERATORS:
        raise InvalidArgumentError(
            f"operator config names unknown type {kind!r}; known: {sorted(OPERATORS)} (an operator of a task "
            "package registers when the package is installed: pip install it)"
        )
    kwargs = {k: v for k, v in config.items() if k != "type"}
    try:
        return OPERATORS[kind].from_config(kwargs)
    except TypeError as err:
        raise InvalidArgumentError(f"operator config for {kind} has bad keys: {err}") from err


def initial_estimate(operator: Any, y: torch.Tensor) -> torch.Tensor:
    """x_0 for the measurement ``y``: the operator's own ``initial_estimate`` or, without one, A^T y."""
    return getattr(operator, "initial_estimate", operator.A_adjoint)(y)


@contextlib.contextmanager
def fit_operator(operator: Any, size: Sequence[int] | None) -> Iterator[Any]:
    """Temporarily set ``operator.image_size`` to ``size`` (None: any size the operator takes) for
    operators that have one (BlockCS needs it for images whose sides are not multiples of its
    block); others are left alone."""
    size = None if size is None else tuple(int(s) for s in size)
    if not hasattr(operator, "image_size") or operator.image_size == size:
        yield operator
        return
    before = operator.image_size
    operator.image_size = size
    try:
        yield operator
    finally:
        operator.image_size = before


def describe_operator(operator: Any) -> dict[str, Any]:
    """The config an operator is saved with: its ``config()``, or a deepinv physics' ``physics_config``
    (unverified: for comparing a live operator with a saved one).

    >>> from lorun_peft.operators import BlockCS
    >>> describe_operator(BlockCS(0.25, block=8))["type"]
    'BlockCS'
    """
    if is_deepinv_physics(operator):
        return physics_config(operator, verify=False)
    return operator.config()


def rebuild_operator(
    config: Mapping[str, Any] | None, where: str, state: Mapping[str, torch.Tensor] | None = None
) -> "LinearOperator":
    """:func:`operator_from_config` for a saved configuration (and ``state``, the saved operator
    tensors, which a deepinv physics is built from): any failure to rebuild it (an unknown type, bad
    keys or values, an error of the operator's own) is an IncompatibleBundleError naming ``where``,
    the saved folder or bundle.

    >>> rebuild_operator({"type": "Teleporter"}, "bundle cs-x")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    lorun_peft.errors.IncompatibleBundleError: bundle cs-x: its operator 'Teleporter' cannot be rebuilt here: operator config names unknown type 'Teleporter'; known: ['BlockCS', ...] (an operator of a task package registers when the package is installed: pip install it)
    """
    config = dict(config or {})
    name = f"deepinv.physics.{config.get('class')}" if config.get("type") == "deepinv" else config.get("type")
    try:
        return operator_from_config(config, state)
    except Exception as err:  # noqa: BLE001 - any failure to rebuild is the saved configuration's problem
        raise IncompatibleBundleError(f"{where}: its operator {name!r} cannot be rebuilt here: {err}") from None


class LinearOperator(nn.Module):
    """Base class for a linear degradation y = A x (+ noise).

    Subclasses implement ``A``, ``A_adjoint`` and ``_config_args``; they may override
    ``prox_l2`` with a closed form and ``initial_estimate`` with something better than A^T y.
    """

    cg_iterations: int = 50

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802 (deepinv's name)
        raise NotImplementedError

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        raise NotImplementedError

    def prox_l2(self, z: torch.Tensor, y: torch.Tensor, gamma: float | torch.Tensor) -> torch.Tensor:
        """argmin_x gamma/2 ||A x - y||^2 + 1/2 ||x - z||^2, by conjugate gradients."""
        return prox_l2_cg(self.A, self.A_adjoint, z, y, gamma, self.cg_iterations)

    def initial_estimate(self, y: torch.Tensor) -> torch.Tensor:
        """The first estimate x_0 handed to stage 0 (A^T y unless a subclass knows better)."""
        return self.A_adjoint(y)

    def _check_image(self, x: torch.Tensor, name: str = "x") -> None:
        """``x`` must be an (N, C, H, W) tensor (with ``self.channels`` channels where that is set)."""
        channels = getattr(self, "channels", None)
        if not torch.is_tensor(x) or x.dim() < 2:
            got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise InvalidArgumentError(f"{name} must be a tensor shaped (N, C, H, W), got {got}")
        if channels is not None and (x.dim() < 3 or x.shape[-3] != channels):
            raise InvalidArgumentError(f"{name} must have {channels} channels (dimension -3), got shape {tuple(x.shape)}")

    def forward(
        self,
        x: torch.Tensor,
        noise_sigma: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Simulate a measurement y = A x + noise_sigma * n with n standard Gaussian."""
        y = self.A(x)
        if noise_sigma:
            noise = torch.randn(y.shape, generator=generator, dtype=y.dtype, device=y.device)
            y = y + noise_sigma * noise
        return y

    def _config_args(self) -> dict[str, Any]:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """A JSON-able dict from which ``operator_from_config`` rebuilds this operator."""
        return {"type": type(self).__name__, **self._config_args()}

    @classmethod
    def from_config(cls, kwargs: dict[str, Any]) -> "LinearOperator":
        return cls(**kwargs)


def prox_l2_cg(
    A: Callable[[torch.Tensor], torch.Tensor],  # noqa: N803
    A_adjoint: Callable[[torch.Tensor], torch.Tensor],  # noqa: N803
    z: torch.Tensor,
    y: torch.Tensor,
    gamma: float | torch.Tensor,
    iterations: int,
) -> torch.Tensor:
    """Solve (I + gamma A^T A) x = z + gamma A^T y with differentiable conjugate gradients."""
    rhs = z + gamma * A_adjoint(y)
    return conjugate_gradient(lambda v: v + gamma * A_adjoint(A(v)), rhs, x0=z, iterations=iterations)
