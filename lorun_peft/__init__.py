"""lorun_peft: deep LoRA-unfolding networks on Hugging Face PEFT.

Names load on first use (PEP 562), so ``import lorun_peft`` and ``lorun --help`` do not import
torch, PEFT, huggingface_hub, accelerate or timm until something needs them.

>>> import lorun_peft
>>> lorun_peft.gamma_rank(64, 64, 10)
7
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types
import warnings
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it ("" for a submodule of the same name)
_NAMES = {
    "unfold": "unfold", "UnfoldedNetwork": "unfold", "gamma_rank": "adapters.ranks", "train": "training.loop",
    "train_two_phase": "training.recipe", "evaluate": "training.evaluation", "load": "unfold",
    "list_bundles": "persistence.catalog", "UnfoldConfig": "config",
    "data": "", "errors": "", "metrics": "", "operators": "", "zoo": "", "denoisers": "",
}

# Only names that import without a warning: the moved modules (MOVED) stay out, since tools that
# walk dir() or __all__ (pytest collecting doctests, ``from lorun_peft import *``) would set off
# their FutureWarning; ``lorun_peft.recipe`` still works, with the warning.
__all__ = [*_NAMES, "__version__"]


def __getattr__(name: str) -> Any:
    if name in MOVED and name not in _NAMES:  # lorun_peft.train stays the function
        _warn_moved(name, stacklevel=3)
        value = importlib.import_module(f"{__name__}.{MOVED[name]}")
        sys.modules.setdefault(f"{__name__}.{name}", value)
        globals()[name] = value
        return value
    if name not in _NAMES:
        raise AttributeError(f"module 'lorun_peft' has no attribute {name!r}")
    module = importlib.import_module(f".{_NAMES[name] or name}", __name__)
    value = module if not _NAMES[name] else getattr(module, name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


class _Package(types.ModuleType):
    """Importing ``lorun_peft.unfold`` or ``lorun_peft.train`` binds the submodule to the package;
    the functions of the same names keep them (as an eager ``from .unfold import unfold`` did)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("unfold", "train") and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

# Modules that moved into subpackages (old name -> new path under lorun_peft). For one release the
# old paths still import, with a FutureWarning naming the new one: ``import lorun_peft.recipe`` and
# ``from lorun_peft.recipe import PAPER`` give the module lorun_peft.training.recipe itself.
MOVED = {
    "ranks": "adapters.ranks", "sharing": "adapters.sharing", "kernels": "operators.kernels", "linalg":
    "operators.linalg", "checks": "errors", "schema": "persistence.schema", "saving": "persistence.saving",
    "reading": "persistence.reading", "swap": "persistence.swap", "catalog": "persistence.catalog", "publish":
    "persistence.publish", "fingerprint": "persistence.fingerprint", "cards": "persistence.cards", "networks":
    "persistence.networks", "methods": "persistence.methods", "bundle": "persistence.bundle", "models":
    "resolve", "hub": "persistence._hub", "files": "persistence._files", "io": "persistence.atomic",
    "train": "training.loop", "pretrain": "training.pretrain", "recipe": "training.recipe", "evaluation":
    "training.evaluation", "spectral": "data.spectral", "commands": "cli.commands",
    "demo": "cli.demo", "playground": "app.playground", "report": "adapters.report"
}


class _MovedModules:
    """A ``sys.meta_path`` finder for the old paths in :data:`MOVED` (one mechanism instead of a shim
    file each). Asked only after the real files are looked for, so it never hides a module."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        package, _, old = fullname.rpartition(".")
        if package != __name__ or old not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # the default module, replaced in exec_module

    def exec_module(self, module: types.ModuleType) -> None:
        old = module.__name__.rpartition(".")[2]
        _warn_moved(old, stacklevel=2)
        sys.modules[module.__name__] = importlib.import_module(f"{__name__}.{MOVED[old]}")  # what the import returns


def _warn_moved(old: str, stacklevel: int) -> None:
    warnings.warn(f"{__name__}.{old} moved to {__name__}.{MOVED[old]}; the old path will be removed in the next release",
                  FutureWarning, stacklevel=stacklevel)


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModules())
