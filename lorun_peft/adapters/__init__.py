"""Everything that touches PEFT, as PEFT itself splits it: the rank rule (:mod:`.ranks`), how the K
stages share their denoiser (:mod:`.sharing`), the per-stage adapters with their configs and
saved state (:mod:`.stages`), and the stages prepared for inference on onnxruntime (:mod:`.engine`).
No other module of the library imports PEFT.

>>> from lorun_peft.adapters import gamma_rank
>>> gamma_rank(64, 64, 10)
7
"""

from __future__ import annotations

from .ranks import (  # noqa: F401
    check_gamma,
    layer_dims,
)
from .sharing import (  # noqa: F401
    SharedDenoiser,
    IndependentDenoisers,
    SHARE_MODES,
    call_stage,
)
from .stages import (  # noqa: F401
    gamma_rank,
    stage_name,
    LayerRank,
    RankTable,
    StageAdapters,
    ADAPTER_KINDS,
    find_layers,
    plain_state,
    saved_adapter_slots,
    stage_configs,
    adapter_config_mismatch,
    save_stages,
)

__all__ = [
    "check_gamma", "layer_dims", "SharedDenoiser", "IndependentDenoisers", "SHARE_MODES",
    "call_stage", "gamma_rank", "stage_name", "LayerRank", "RankTable", "StageAdapters",
    "ADAPTER_KINDS", "find_layers", "plain_state", "saved_adapter_slots", "stage_configs",
    "adapter_config_mismatch", "save_stages",
]
