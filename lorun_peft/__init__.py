"""lorun_peft: deep LoRA-unfolding networks on Hugging Face PEFT.

Names load on first use (PEP 562), so ``import lorun_peft`` and ``lorun --help`` do not import
torch, PEFT, huggingface_hub, accelerate or timm until something needs them.

>>> import lorun_peft
>>> lorun_peft.gamma_rank(64, 64, 10)
7
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it ("" for a submodule of the same name)
_NAMES = {
    "unfold": "unfold", "UnfoldedNetwork": "unfold", "gamma_rank": "adapters", "train": "train",
    "train_two_phase": "recipe", "evaluate": "evaluation", "load": "unfold", "list_bundles": "bundle",
    "UnfoldConfig": "config", "recipe": "", "data": "", "errors": "", "metrics": "", "operators": "", "zoo": "", "pretrain": "",
}

__all__ = [*_NAMES, "__version__"]


def __getattr__(name: str) -> Any:
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
