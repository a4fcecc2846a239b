"""Pins every piece of PEFT that lorun_peft.adapters.stages relies on, so a PEFT upgrade fails here."""

from __future__ import annotations

import torch
from conftest import TinyDenoiser
from peft import get_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer

from lorun_peft.adapters.stages import (
    StageAdapters,
    adapter_config_mismatch,
    plain_state,
    save_stages,
    saved_adapter_slots,
    stage_configs,
)

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


def test_merged_forward_matches_adapter_forward_and_keeps_base_exact():
    for adapter, options in (("lora", {"init_lora_weights": False}), ("loha", {"init_weights": False}),
                             ("lokr", {"init_weights": False})):
        torch.manual_seed(0)
        s = StageAdapters(TinyDenoiser(width=16), K=K, gamma=25.0, adapter=adapter, options=options)
        base = [p.detach().clone() for p in s.base_parameters()]
        x = torch.rand(2, 1, 9, 11)
        with torch.no_grad():
            for k in range(K):
                for _ in range(20):
                    merged = s.merged_forward(k, x)
                torch.testing.assert_close(merged, s(k, x), rtol=1e-5, atol=1e-6)
        assert all(torch.equal(a, b) for a, b in zip(base, s.base_parameters())), adapter
        assert all(layer.active_adapters == [f"stage_{K - 1}"] for layer in s._tuner_layers)


def test_empty_active_adapter_runs_base_only():
    """The merged path relies on PEFT running only base_layer when no adapter is active."""
    s = stages()
    x = torch.rand(1, 1, 8, 8)
    for layer in s._tuner_layers:
        layer._active_adapter = []
    with torch.no_grad():
        out = s.model(x)
        with s.peft_model.disable_adapter():
            plain = s.model(x)
    torch.testing.assert_close(out, plain, rtol=0, atol=0)


def test_plain_state_undoes_peft_base_layer_renaming():
    """PEFT moves an adapted layer's weights to ``<layer>.base_layer.*`` and adds ``lora_A``/``lora_B``."""
    torch.manual_seed(0)
    plain = TinyDenoiser(width=16)
    expected = {k: v.clone() for k, v in plain.state_dict().items()}
    s = StageAdapters(plain, K=K, gamma=25.0)
    wrapped = set(s.model.state_dict())
    assert any(".base_layer." in k for k in wrapped) and any(".lora_A." in k for k in wrapped)
    for model in (s.model, s.peft_model):
        state = plain_state(model)
        assert set(state) == set(expected) and all(torch.equal(state[k], v) for k, v in expected.items())


def test_saved_adapter_slots_are_the_keys_peft_saves_and_the_live_parameters(tmp_path):
    from safetensors.torch import load_file

    s = stages()
    save_stages(s, tmp_path)
    assert not (tmp_path / "README.md").exists()
    for k in range(K):
        slots = saved_adapter_slots(s, k)
        saved = load_file(tmp_path / f"stage_{k}" / "adapter_model.safetensors")
        assert set(slots) == set(saved) and all(".lora_" in key for key in slots)
        assert {id(p) for p in slots.values()} == {id(p) for p in s.adapter_parameters(k)}
        assert all(torch.equal(slots[key].detach(), saved[key]) for key in saved)


def test_stage_configs_agree_and_a_rank_change_is_named():
    s = stages()
    configs = stage_configs(s)
    assert len(configs) == K and len({text for _, text in configs}) == 1
    live = configs[0][0]
    saved = {**live, "peft_version": "0.0.1", "rank_pattern": {**live["rank_pattern"], next(iter(live["rank_pattern"])): 99}}
    message = adapter_config_mismatch(saved, live)
    assert "rank_pattern" in message and "99 vs" in message and "peft_version" not in message
