"""Task bundles: one degradation setting's K stage adapters, step parameters and operator, saved as
safetensors + JSON, loaded into a fresh network or swapped into a live one, pushed to and pulled
from the Hugging Face Hub.

This module gathers the public names; each job lives in a module of its own:

=====================  ==========================================================================
:mod:`.schema`         the format: file names, ``lorun_config.json`` keys and checks, ``Bundle``
:mod:`.saving`         ``save_adapters``, ``save_base`` (atomic folders, model cards)
:mod:`.reading`        ``read_bundle``, ``load_base`` (every file checked; nothing unpickled)
:mod:`.swap`           ``load_adapters``: swap a bundle into a live network, all or nothing
:mod:`.catalog`        ``list_bundles``, ``inspect``, ``copy_bundle``
:mod:`.publish`        ``push_adapters``, ``push_base``, ``push_folder``, ``pull``
:mod:`.fingerprint`    ``base_state``, ``fingerprint``: the base a bundle was trained on
:mod:`.cards`          the model cards; :mod:`.files`: locating and reading saved folders
:mod:`.methods`        ``BundleMethods``, the network methods of the same names
=====================  ==========================================================================

The base denoiser is saved once (``save_base``) and bundles name it by fingerprint. Swapping
checks everything and builds every new tensor before it touches the live network, so a bad
bundle raises and leaves the network as it was.

>>> import tempfile, torch
>>> from lorun_peft import unfold
>>> from lorun_peft.denoisers import UNet
>>> from lorun_peft.operators import BlockCS
>>> _ = torch.manual_seed(0)
>>> net = unfold(UNet(1, width=4, depth=1), BlockCS(0.25, block=8), K=2, noise_level=True)
>>> folder = save_adapters(net, tempfile.mkdtemp() + "/cs-0.25")
>>> sorted(p.name for p in folder.iterdir())
['README.md', 'lorun_config.json', 'stage_0', 'stage_1', 'unfolding.safetensors']
>>> read_bundle(folder).config["K"]
2
"""

from __future__ import annotations

from .catalog import BundleInfo, copy_bundle, inspect, list_bundles
from .fingerprint import base_state, fingerprint
from .methods import BundleMethods
from .publish import pull, push_adapters, push_base, push_folder
from .reading import load_base, read_bundle
from .saving import save_adapters, save_base
from .schema import (
    ADAPTER_CONFIG_NAME,
    ADAPTER_WEIGHTS_NAME,
    BASE_CONFIG_NAME,
    BASE_PATTERNS,
    BASE_WEIGHTS_NAME,
    BUNDLE_PATTERNS,
    CARD_NAME,
    CONFIG_NAME,
    FORMAT_VERSION,
    STORAGE_DTYPES,
    UNFOLDING_NAME,
    Bundle,
)
from .swap import load_adapters

__all__ = [
    "BundleMethods",
    "Bundle",
    "BundleInfo",
    "save_adapters",
    "save_base",
    "read_bundle",
    "load_adapters",
    "load_base",
    "list_bundles",
    "push_adapters",
    "push_base",
    "push_folder",
    "pull",
    "copy_bundle",
    "inspect",
    "base_state",
    "fingerprint",
    "FORMAT_VERSION",
    "CONFIG_NAME",
    "UNFOLDING_NAME",
    "CARD_NAME",
    "BASE_CONFIG_NAME",
    "BASE_WEIGHTS_NAME",
    "ADAPTER_CONFIG_NAME",
    "ADAPTER_WEIGHTS_NAME",
    "BUNDLE_PATTERNS",
    "BASE_PATTERNS",
    "STORAGE_DTYPES",
]
