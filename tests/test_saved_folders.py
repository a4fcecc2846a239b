"""Folders saved by lorun_peft 0.1.0 before the package moved into subpackages (issue #21) load
unchanged: a whole network (``save_pretrained``), a base and a task bundle. They were written by
the release at commit 4f9ded1 (tests/data/saved_by_0.1.0, 100 kB) with the restoration they gave."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import lorun_peft
from lorun_peft.resolve import load_network
from lorun_peft.unfold import UnfoldedNetwork

SAVED = Path(__file__).resolve().parent / "data" / "saved_by_0.1.0"
EXPECTED = load_file(str(SAVED / "expected.safetensors"))


def _restore(net: UnfoldedNetwork) -> torch.Tensor:
    with torch.no_grad():
        assert torch.equal(net.operator.A(EXPECTED["x"]), EXPECTED["y"])
        return net(EXPECTED["y"])


@pytest.mark.parametrize("how", ["from_pretrained", "load(base, bundle)", "--model folder"])
def test_a_folder_saved_by_the_previous_layout_loads_and_restores_the_same(how):
    if how == "from_pretrained":
        net = UnfoldedNetwork.from_pretrained(SAVED / "network")
    elif how == "load(base, bundle)":
        net = lorun_peft.load(SAVED / "base", SAVED / "bundle")
    else:
        net, note = load_network(SAVED / "network")
        assert note is None
    assert net.K == 2
    torch.testing.assert_close(_restore(net), EXPECTED["restored"], rtol=0, atol=1e-6)


def test_the_saved_configs_name_a_module_that_still_imports():
    """Saved configs record the denoiser's module path; the move kept it where it was."""
    import importlib

    info = json.loads((SAVED / "base" / "base_config.json").read_text())["denoiser"]
    assert getattr(importlib.import_module(info["module"]), info["qualname"]).__name__ == "UNet"
