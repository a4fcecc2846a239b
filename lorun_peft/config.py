"""``UnfoldConfig``: every setting of an unfolded network but its weights, in one dataclass.

It is the one schema behind :func:`lorun_peft.unfold` (which builds one from its keyword
arguments), ``net.config``, the ``unfold_config.json`` of ``net.save_pretrained`` and the command
line's saved models: validated in ``__post_init__``, written by :meth:`UnfoldConfig.to_dict`,
read back by :meth:`UnfoldConfig.from_dict`. Adding an option means adding a field here.

>>> config = UnfoldConfig(K=3, algorithm="hqs", gamma=25.0)
>>> UnfoldConfig.from_dict(config.to_dict()) == config
True
>>> UnfoldConfig(K=0)
Traceback (most recent call last):
...
lorun_peft.errors.InvalidArgumentError: K (the number of stages) must be an int >= 1, got 0

Its named field groups are the one place those lists are written: :attr:`UnfoldConfig.SETTINGS`
(the keyword arguments of ``unfold()``: every field but the operator, the denoiser and the format
version) and :attr:`UnfoldConfig.SWAP_KEYS` (what a task bundle must share with a live network to
swap into it).

>>> config.settings()["algorithm"], "operator" in config.settings()
('hqs', False)
>>> UnfoldConfig.SWAP_KEYS
('K', 'algorithm', 'gamma', 'adapter', 'noise_level')
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from .adapters.stages import ADAPTER_KINDS, check_gamma
from .errors import CorruptFileError, IncompatibleBundleError, InvalidArgumentError
from .adapters.sharing import SHARE_MODES
from .steps import STEPS

__all__ = ["UnfoldConfig", "CONFIG_FORMAT_VERSION"]

CONFIG_FORMAT_VERSION = 1


@dataclass(frozen=True)
class UnfoldConfig:
    """The settings of a K-stage unfolded network (see :func:`lorun_peft.unfold` for each).

    ``operator`` is the operator's ``config()`` and ``denoiser`` the base denoiser's spec
    (``{"registry_name": ..., "config": {...}, "module": ..., "qualname": ...}``); both are filled
    in when a network is saved (``net.unfold_config()``) and are None in a config built by hand.
    """

    K: int = 9  # noqa: N815 - the paper's name
    algorithm: str = "pgd"
    gamma: float = 10.0
    share: str = "lora"
    adapter: str = "lora"
    target_modules: str | tuple[str, ...] | None = None
    noise_level: bool = False
    checkpoint: bool = False
    adapter_options: Mapping[str, Any] = field(default_factory=dict)
    operator: Mapping[str, Any] | None = None
    denoiser: Mapping[str, Any] | None = None
    format_version: int = CONFIG_FORMAT_VERSION

    # the named field groups (class constants, not fields)
    SETTINGS: ClassVar[tuple[str, ...]] = (
        "K", "algorithm", "gamma", "share", "adapter", "target_modules", "noise_level", "checkpoint", "adapter_options",
    )
    SWAP_KEYS: ClassVar[tuple[str, ...]] = ("K", "algorithm", "gamma", "adapter", "noise_level")

    def __post_init__(self) -> None:
        if isinstance(self.K, bool) or not isinstance(self.K, int) or self.K < 1:
            raise InvalidArgumentError(f"K (the number of stages) must be an int >= 1, got {self.K!r}")
        check_gamma(self.gamma)
        if not isinstance(self.algorithm, str) or self.algorithm not in STEPS:
            raise InvalidArgumentError(f"algorithm must be one of {sorted(STEPS)}, got {self.algorithm!r}")
        if not isinstance(self.share, str) or self.share not in SHARE_MODES:
            raise InvalidArgumentError(f"share must be one of {list(SHARE_MODES)}, got {self.share!r}")
        if not isinstance(self.adapter, str) or self.adapter not in ADAPTER_KINDS:
            raise InvalidArgumentError(f"adapter must be one of {sorted(ADAPTER_KINDS)}, got {self.adapter!r}")
        for name in ("noise_level", "checkpoint"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidArgumentError(f"{name} must be True or False, got {getattr(self, name)!r}")
        targets = self.target_modules
        if targets is not None and not isinstance(targets, str):
            if not all(isinstance(t, str) for t in targets):
                raise InvalidArgumentError(f"target_modules must be None, a string or strings, got {targets!r}")
            object.__setattr__(self, "target_modules", tuple(targets))
        if not isinstance(self.adapter_options, Mapping):
            raise InvalidArgumentError(f"adapter_options must be a dict, got {type(self.adapter_options).__name__}")
        object.__setattr__(self, "adapter_options", dict(self.adapter_options))
        for name in ("operator", "denoiser"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Mapping):
                raise InvalidArgumentError(f"{name} must be None or a dict (a config), got {type(value).__name__}")
        version = self.format_version
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= CONFIG_FORMAT_VERSION:
            raise IncompatibleBundleError(
                f"format_version {version!r} is not supported (this lorun_peft reads 1..{CONFIG_FORMAT_VERSION}); upgrade lorun_peft"
            )

    def unfold_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`lorun_peft.unfold` (K and the rest; not the operator or denoiser)."""
        return {name: getattr(self, name) for name in self.SETTINGS}

    def settings(self) -> dict[str, Any]:
        """:attr:`SETTINGS` as plain JSON values (as :meth:`to_dict` writes them)."""
        return {key: value for key, value in self.to_dict().items() if key in self.SETTINGS}

    def replace(self, **changes: Any) -> UnfoldConfig:
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (tuples as lists); raises InvalidArgumentError on a value JSON cannot hold."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if isinstance(data["target_modules"], tuple):
            data["target_modules"] = list(data["target_modules"])
        try:
            return json.loads(json.dumps(data, allow_nan=False))
        except (TypeError, ValueError) as err:
            raise InvalidArgumentError(f"the network's settings cannot be written as JSON: {err}") from None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "the configuration") -> UnfoldConfig:
        """Read a dict written by :meth:`to_dict`; unknown keys and bad values are CorruptFileErrors
        naming ``where`` (a newer format version is an IncompatibleBundleError)."""
        if not isinstance(data, Mapping):
            raise CorruptFileError(f"{where}: expected an object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CorruptFileError(f"{where}: unknown settings {unknown[:5]} (edited file, or written by a newer lorun_peft)")
        try:
            return cls(**data)
        except (InvalidArgumentError, TypeError, ValueError) as err:
            raise CorruptFileError(f"{where}: {err}") from None
