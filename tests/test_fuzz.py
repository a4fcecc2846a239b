"""Fuzzing the bundle loader with hypothesis: random bytes, truncations, bit flips and mutated
JSON in any bundle file give only the library's own errors, never a hang, never partial state."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TinyDenoiser
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lorun_peft
from lorun_peft.errors import LorunError
from lorun_peft.operators import BlockCS

FILES = ["lorun_config.json", "unfolding.safetensors", "stage_0/adapter_model.safetensors",
         "stage_1/adapter_config.json", "stage_1/adapter_model.safetensors"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    net = lorun_peft.unfold(TinyDenoiser(), BlockCS(0.25, block=8), K=2, adapter_options={"init_lora_weights": False})
    folder = tmp_path_factory.mktemp("fuzz") / "bundle"
    net.save_adapters(folder)
    return net.eval(), folder


def state(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def mutate(data: bytes, kind: str, position: int, value: int) -> bytes:
    if not data:
        return bytes([value])
    i = position % len(data)
    if kind == "truncate":
        return data[:i]
    if kind == "flip":
        return data[:i] + bytes([data[i] ^ (1 << (value % 8))]) + data[i + 1 :]
    if kind == "random":
        return bytes((value * 7919 + j * 104729) % 256 for j in range(len(data)))
    return data[:i] + bytes([value]) * 8 + data[i:]  # insert


settings_ = settings(max_examples=60, deadline=20000, suppress_health_check=[HealthCheck.function_scoped_fixture])


@settings_
@given(name=st.sampled_from(FILES), kind=st.sampled_from(["truncate", "flip", "random", "insert"]),
       position=st.integers(0, 10**6), value=st.integers(0, 255))
def test_mutated_bundle_file(saved, tmp_path_factory, name, kind, position, value):
    net, folder = saved
    copy = tmp_path_factory.mktemp("mut") / "bundle"
    shutil.copytree(folder, copy)
    target = copy / name
    target.write_bytes(mutate(target.read_bytes(), kind, position, value))
    before = state(net)
    try:
        net.load_adapters(copy)
    except LorunError:
        pass
    after = state(net)
    assert all(torch.equal(before[k], after[k]) for k in before)  # a harmless mutation reloads the same


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)


@settings_
@given(key=st.sampled_from(["K", "algorithm", "gamma", "share", "operator", "files", "fingerprint", "new_key"]),
       value=JSON_VALUES)
def test_mutated_bundle_json(saved, tmp_path_factory, key, value):
    net, folder = saved
    copy = tmp_path_factory.mktemp("json") / "bundle"
    shutil.copytree(folder, copy)
    config_path = copy / "lorun_config.json"
    config = json.loads(config_path.read_text())
    config[key] = value
    config_path.write_text(json.dumps(config))
    before = state(net)
    try:
        net.load_adapters(copy)
    except LorunError:
        pass
    after = state(net)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_fuzz_files_exist(saved):
    _, folder = saved
    assert all((Path(folder) / name).is_file() for name in FILES)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from conftest import MatrixOperator

    torch.manual_seed(0)
    net = lorun_peft.unfold(TinyDenoiser(), MatrixOperator(), K=2)
    folder = tmp_path_factory.mktemp("ckpt")
    lorun_peft.train(net, torch.rand(4, 1, 8, 8), steps=2, checkpoint_dir=folder, progress=False)
    return (folder / "checkpoint.pt").read_bytes()


@settings_
@given(kind=st.sampled_from(["truncate", "flip", "random", "insert"]), position=st.integers(0, 10**6),
       value=st.integers(0, 255))
def test_mutated_checkpoint(checkpoint, tmp_path_factory, kind, position, value):
    from conftest import MatrixOperator

    folder = tmp_path_factory.mktemp("ckpt_mut")
    (folder / "checkpoint.pt").write_bytes(mutate(checkpoint, kind, position, value))
    torch.manual_seed(0)
    net = lorun_peft.unfold(TinyDenoiser(), MatrixOperator(), K=2)
    before = state(net)
    try:
        lorun_peft.train(net, torch.rand(4, 1, 8, 8), steps=2, checkpoint_dir=folder, progress=False)
    except LorunError:
        assert all(torch.equal(before[k], v) for k, v in state(net).items())
