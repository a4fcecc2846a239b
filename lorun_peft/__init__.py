"""lorun_peft: deep LoRA-unfolding networks on Hugging Face PEFT.

>>> import lorun_peft
>>> lorun_peft.gamma_rank(64, 64, 10)
7
"""

from . import data, errors, metrics, operators
from .adapters import gamma_rank
from .bundle import list_bundles, load
from .train import evaluate, train, train_two_phase
from .unfold import UnfoldedNetwork, unfold

__version__ = "0.1.0"

__all__ = ["unfold", "UnfoldedNetwork", "gamma_rank", "train", "train_two_phase", "evaluate", "load", "list_bundles", "data", "errors", "metrics", "operators", "__version__"]
