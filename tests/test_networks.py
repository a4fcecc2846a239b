"""UnfoldConfig (one schema) and save_pretrained / from_pretrained for every share mode."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import TinyDenoiser
from safetensors.torch import save_file

from lorun_peft import unfold
from lorun_peft.config import UnfoldConfig
from lorun_peft.denoisers import UNet
from lorun_peft.errors import CorruptFileError, IncompatibleBundleError, InvalidArgumentError
from lorun_peft.persistence.networks import NETWORK_CONFIG, NETWORK_WEIGHTS
from lorun_peft.operators import BlockCS, BlurDownsample
from lorun_peft.unfold import UnfoldedNetwork


def trained(share: str, **options) -> UnfoldedNetwork:
    """A network whose every weight differs from a fresh build's (so a load that forgot one shows)."""
    torch.manual_seed(0)
    net = unfold(UNet(1, width=4, depth=1), BlockCS(0.25, block=8, linear_estimate=True), K=3, share=share,
                 noise_level=True, **options)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return net.eval()


def measurement() -> torch.Tensor:
    return BlockCS(0.25, block=8).A(torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(5)))


@pytest.mark.parametrize("share", ["lora", "base", "none"])
def test_every_share_mode_rebuilds_bit_exact_in_a_fresh_process(share, tmp_path):
    net = trained(share)
    folder = net.save_pretrained(tmp_path / share)
    y = measurement()
    save_file({"y": y, "out": net(y)}, str(tmp_path / "expected.safetensors"))
    script = textwrap.dedent(f"""
        import torch
        from safetensors.torch import load_file
        from lorun_peft.unfold import UnfoldedNetwork
        torch.set_num_threads({torch.get_num_threads()})  # the same reduction order as this process
        expected = load_file({str(tmp_path / "expected.safetensors")!r})
        net = UnfoldedNetwork.from_pretrained({str(folder)!r})
        assert net.share == {share!r} and not net.training
        assert torch.equal(net(expected["y"]), expected["out"]), "outputs differ"
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_the_folder_layout_and_its_config(tmp_path):
    lorun, block1 = trained("lora"), trained("base")
    a, b = lorun.save_pretrained(tmp_path / "lorun"), block1.save_pretrained(tmp_path / "block1")
    assert {p.name for p in a.iterdir()} == {NETWORK_CONFIG, "README.md", "base", "bundle"}
    assert {p.name for p in b.iterdir()} == {NETWORK_CONFIG, "README.md", NETWORK_WEIGHTS}
    config = json.loads((b / NETWORK_CONFIG).read_text())
    assert config["format"] == "lorun_peft.network" and config["share"] == "base" and config["K"] == 3
    assert config["operator"]["type"] == "BlockCS" and config["denoiser"]["registry_name"] == "unet"
    assert UnfoldConfig.from_dict({k: v for k, v in config.items() if k in UnfoldConfig.__dataclass_fields__}) == block1.unfold_config()
    # the LoRun folder's bundle swaps into another network of the same base on its own
    other = trained("lora")
    other.load_adapters(a / "bundle")
    y = measurement()
    assert torch.equal(other(y), lorun(y))


def test_a_denoiser_of_your_own_as_instance_or_class(tmp_path):
    torch.manual_seed(0)
    for share in ("lora", "base"):
        net = unfold(TinyDenoiser(), BlockCS(0.25, block=8), K=2, share=share).eval()
        folder = net.save_pretrained(tmp_path / share)
        with pytest.raises(InvalidArgumentError, match="not one of lorun_peft's denoisers"):
            UnfoldedNetwork.from_pretrained(folder)
        y = measurement()
        for given in (TinyDenoiser(), TinyDenoiser):
            again = UnfoldedNetwork.from_pretrained(folder, denoiser=given)
            assert torch.equal(again(y), net(y))
        with pytest.raises(InvalidArgumentError, match="instance or class"):
            UnfoldedNetwork.from_pretrained(folder, denoiser="TinyDenoiser")


def test_half_precision_storage_reads_back_in_the_network_dtype(tmp_path):
    net = trained("none")
    folder = net.save_pretrained(tmp_path / "half", storage_dtype="float16")
    again = UnfoldedNetwork.from_pretrained(folder)
    assert all(p.dtype == torch.float32 for p in again.parameters())
    y = measurement()
    assert torch.allclose(again(y), net(y), atol=5e-3)


def test_the_rest_of_the_family_is_refused_clearly(tmp_path):
    net = trained("lora")
    net.save_adapters(tmp_path / "bundle")
    with pytest.raises(InvalidArgumentError, match="task bundle, not a saved network"):
        UnfoldedNetwork.from_pretrained(tmp_path / "bundle")
    with pytest.raises(InvalidArgumentError, match=f"no {NETWORK_CONFIG}"):
        UnfoldedNetwork.from_pretrained(tmp_path)


@pytest.mark.parametrize("edit, error, match", [
    (lambda c: c.update(shiny=1), CorruptFileError, "unknown settings"),
    (lambda c: c.update(K=0), CorruptFileError, "K .* must be an int >= 1"),
    (lambda c: c.update(format_version=99), IncompatibleBundleError, "format_version 99"),
    (lambda c: c.update(format="something"), CorruptFileError, "'format' must be"),
    (lambda c: c.update(share="none"), IncompatibleBundleError, "do not fit"),
])
def test_an_edited_config_is_a_clear_error(tmp_path, edit, error, match):
    folder = trained("base").save_pretrained(tmp_path / "net")
    config = json.loads((folder / NETWORK_CONFIG).read_text())
    edit(config)
    (folder / NETWORK_CONFIG).write_text(json.dumps(config))
    with pytest.raises(error, match=match):
        UnfoldedNetwork.from_pretrained(folder)


def test_a_bad_option_to_from_pretrained_is_named(tmp_path):
    folder = trained("base").save_pretrained(tmp_path / "net")
    with pytest.raises(InvalidArgumentError, match="unknown Hub download option 'cache_dri'"):
        UnfoldedNetwork.from_pretrained(folder, cache_dri="x")


# ---- UnfoldConfig -------------------------------------------------------------------------------
def test_unfold_config_is_the_network_s_settings():
    net = unfold(UNet(1, width=4, depth=1), BlurDownsample(torch.ones(3, 3) / 9, scale=2), K=2, algorithm="hqs",
                 gamma=30.0, target_modules=["encoders.0.conv1"], noise_level=True)
    assert net.config == UnfoldConfig(K=2, algorithm="hqs", gamma=30.0, target_modules=("encoders.0.conv1",), noise_level=True)
    assert (net.K, net.algorithm, net.gamma, net.share) == (2, "hqs", 30.0, "lora")
    full = net.unfold_config()
    assert full.operator["type"] == "BlurDownsample" and full.denoiser["config"] == net.denoisers.model.config()
    assert UnfoldConfig.from_dict(full.to_dict()) == full
    same = unfold(UNet(1, width=4, depth=1), BlurDownsample(torch.ones(3, 3) / 9, scale=2), config=net.config)
    assert same.config == net.config


def test_to_lora_updates_the_config():
    net = trained("base")
    net.to_lora(25.0)
    assert net.config.share == "lora" and net.config.gamma == 25.0


@pytest.mark.parametrize("options, match", [
    ({"K": 1.5}, "K .* must be an int"),
    ({"algorithm": "admm"}, "algorithm must be one of"),
    ({"gamma": -1.0}, "gamma"),
    ({"share": "all"}, "share must be one of"),
    ({"adapter": "ia3"}, "adapter must be one of"),
    ({"noise_level": "yes"}, "noise_level must be True or False"),
    ({"target_modules": [1, 2]}, "target_modules must be"),
    ({"adapter_options": ["r"]}, "adapter_options must be a dict"),
    ({"operator": "BlockCS"}, "operator must be None or a dict"),
])
def test_each_bad_setting_is_a_clear_error(options, match):
    with pytest.raises(InvalidArgumentError, match=match):
        UnfoldConfig(**options)


def test_unfold_names_an_unknown_setting_and_refuses_two_sources():
    with pytest.raises(InvalidArgumentError, match=r"unknown settings \['ganma'\]"):
        unfold(UNet(1, width=4, depth=1), BlockCS(0.25, block=8), K=2, ganma=3.0)
    with pytest.raises(InvalidArgumentError, match="either config= or"):
        unfold(UNet(1, width=4, depth=1), BlockCS(0.25, block=8), config=UnfoldConfig(), gamma=3.0)
    with pytest.raises(CorruptFileError, match="unknown settings"):
        UnfoldConfig.from_dict({"K": 2, "extra": True}, "x.json")
