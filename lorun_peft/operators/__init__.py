"""Degradation operators for the paper's three tasks (and deblurring, inpainting), all following one
small protocol.

>>> import torch
>>> from lorun_peft.operators import BlockCS
>>> op = BlockCS(0.25, block=8)
>>> op.A(torch.rand(1, 1, 16, 16)).shape
torch.Size([1, 16, 2, 2])
"""

from .base import (
    OPERATORS,
    LinearOperator,
    fit_operator,
    initial_estimate,
    operator_from_config,
    rebuild_operator,
    register_operator,
)
from .blur import Blur
from .cassi import CASSI
from .cs import BlockCS
from .inpainting import Inpainting
from .sr import BlurDownsample

__all__ = [
    "LinearOperator",
    "BlockCS",
    "BlurDownsample",
    "CASSI",
    "Blur",
    "Inpainting",
    "OPERATORS",
    "operator_from_config",
    "rebuild_operator",
    "fit_operator",
    "initial_estimate",
    "register_operator",
]
