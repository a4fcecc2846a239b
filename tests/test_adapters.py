"""Pins every piece of PEFT that lorun_peft.adapters relies on, so a PEFT upgrade fails here."""

from __future__ import annotations

import torch
from conftest import TinyDenoiser
from peft import get_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer

from lorun_peft.adapters import StageAdapters

K = 3


def stages(**options) -> StageAdapters:
    torch.manual_seed(0)
    return StageAdapters(TinyDenoiser(width=16), K=K, gamma=25.0, options={"init_lora_weights": False, **options})


def test_activate_matches_peft_set_adapter():
    """Setting the private `_active_adapter` on each tuner layer selects the same adapter as PEFT."""
    s = stages()
    x = torch.rand(2, 1, 8, 8)
    for k in range(K):
        ours = s(k, x)
        assert all(layer.active_adapters == [f"stage_{k}"] for layer in s._tuner_layers)
        reference = stages()
        reference.peft_model.set_adapter(f"stage_{k}")
        torch.testing.assert_close(ours, reference.model(x), rtol=0, atol=0)


def test_all_adapters_trainable_after_construction():
    """add_adapter leaves new adapters frozen; PeftModel.set_requires_grad must turn them on."""
    s = stages()
    for k in range(K):
        assert all(p.requires_grad for p in s.adapter_parameters(k))
    assert not any(p.requires_grad for p in s.base_parameters())


def test_tuner_layers_cover_every_target():
    s = stages()
    prefix = "base_model.model."
    names = {n.removeprefix(prefix) for n, m in s.peft_model.named_modules() if isinstance(m, BaseTunerLayer)}
    assert names == {row.name for row in s.table.layers}


def test_adapter_parameters_partition_the_model():
    """Adapter weights live in PEFT dicts keyed by adapter name; everything else is base."""
    s = stages()
    per_stage = [{id(p) for p in s.adapter_parameters(k)} for k in range(K)]
    base = {id(p) for p in s.base_parameters()}
    everything = {id(p) for p in s.peft_model.parameters()}
    assert all(per_stage) and set.union(*per_stage, base) == everything
    assert sum(len(ids) for ids in per_stage) + len(base) == len(everything)
    for k in range(K):
        state = get_peft_model_state_dict(s.peft_model, adapter_name=f"stage_{k}")
        assert sum(t.numel() for t in state.values()) == sum(p.numel() for p in s.adapter_parameters(k))


def test_activate_does_not_touch_requires_grad():
    s = stages()
    s.activate(1)
    assert all(p.requires_grad for k in range(K) for p in s.adapter_parameters(k))
