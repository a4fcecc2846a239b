"""The rest of the bad-input matrix (see tests/README.md): each raises the library's own error,
names what is wrong, and leaves the live network and existing files unchanged."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import MatrixOperator, TinyDenoiser

import lorun_peft
from lorun_peft.errors import CorruptFileError, IncompatibleBundleError, InvalidArgumentError
from lorun_peft.operators import BlockCS


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    net = lorun_peft.unfold(TinyDenoiser(), BlockCS(0.25, block=8), K=3, adapter_options={"init_lora_weights": False})
    folder = tmp_path_factory.mktemp("bad") / "bundle"
    net.save_adapters(folder)
    return net, folder


def state(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def unchanged(net, before):
    return all(torch.equal(before[k], v) for k, v in state(net).items())


def test_extra_stage(saved, tmp_path):
    net, folder = saved
    shutil.copytree(folder, tmp_path / "b")
    shutil.copytree(tmp_path / "b" / "stage_1", tmp_path / "b" / "stage_3")
    before = state(net)
    with pytest.raises(CorruptFileError, match=r"\['stage_3'\], stages its lorun_config.json \(K=3\) does not list"):
        net.load_adapters(tmp_path / "b")
    assert unchanged(net, before)


def test_unknown_config_key(saved, tmp_path):
    net, folder = saved
    shutil.copytree(folder, tmp_path / "b")
    path = tmp_path / "b" / "lorun_config.json"
    config = json.loads(path.read_text())
    config["surprise"] = 1
    path.write_text(json.dumps(config))
    before = state(net)
    with pytest.raises(CorruptFileError, match=r"unknown keys \['surprise'\]"):
        net.load_adapters(tmp_path / "b")
    assert unchanged(net, before)


def test_gamma_of_another_network(saved):
    _, folder = saved
    torch.manual_seed(0)  # the same base weights as the bundle's; at gamma 12 the ranks are the same too
    other = lorun_peft.unfold(TinyDenoiser(), BlockCS(0.25, block=8), K=3, gamma=12)
    before = state(other)
    with pytest.raises(IncompatibleBundleError, match="gamma: bundle 10.0, network 12"):
        other.load_adapters(folder)
    assert unchanged(other, before)


@pytest.mark.parametrize("name", ["with space/and more", "ünïcödé näme", "日本語 バンドル"])
def test_paths_with_spaces_and_non_ascii(saved, tmp_path, name):
    net, _ = saved
    folder = tmp_path / name
    net.save_adapters(folder)
    before = state(net)
    net.load_adapters(folder)
    assert unchanged(net, before)
    result = lorun_peft.train(lorun_peft.unfold(TinyDenoiser(), MatrixOperator(), K=2), torch.rand(4, 1, 8, 8),
                              steps=1, checkpoint_dir=tmp_path / name / "ckpt", progress=False)
    assert result.checkpoint.is_file()


def test_training_batch_with_differing_sizes():
    net = lorun_peft.unfold(TinyDenoiser(), MatrixOperator(), K=2)
    with pytest.raises(InvalidArgumentError, match="equal-shaped"):
        lorun_peft.train(net, [torch.rand(1, 8, 8), torch.rand(1, 8, 9)], steps=1, progress=False)


def test_y_on_another_device():
    net = lorun_peft.unfold(TinyDenoiser(), MatrixOperator(), K=2)
    with pytest.raises(InvalidArgumentError, match="on meta but the network is torch.float32 on cpu"):
        net(torch.empty(2, 24, device="meta"))


def test_operator_of_another_dtype_than_the_network():
    op = MatrixOperator().double()
    net = lorun_peft.unfold(TinyDenoiser(), op, K=2)
    with pytest.raises(InvalidArgumentError, match="y is torch.float64"):
        net(op.A(torch.rand(1, 1, 8, 8, dtype=torch.float64)))


def test_operator_of_another_dtype_with_matching_y():
    op = BlockCS(0.25, block=8).double()  # converted before unfold, the network's steps stay float32
    net = lorun_peft.unfold(TinyDenoiser(), op, K=2)
    with pytest.raises(InvalidArgumentError, match="the operator holds torch.float64 on cpu but the network"):
        net(torch.rand(2, 16, 2, 2))
    net.double()
    assert net(op.A(torch.rand(1, 1, 16, 16, dtype=torch.float64))).dtype == torch.float64
