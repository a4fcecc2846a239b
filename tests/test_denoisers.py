"""Tests of the reference denoisers (lorun_peft.denoisers): shapes, noise levels, LoRA-friendliness."""

from __future__ import annotations

import json
import re

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from lorun_peft.denoisers import DENOISERS, Transformer, UNet, build_denoiser
from lorun_peft.errors import InvalidArgumentError

# Small models keep the file fast; the defaults and presets are checked separately.
SMALL = {
    "unet": lambda c, **kw: UNet(c, width=4, depth=2, **kw),
    "transformer": lambda c, **kw: Transformer(c, dim=8, depth=2, heads=2, window_size=4, **kw),
}
MODELS = sorted(SMALL)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def weight_layer_names(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("channels", [1, 3, 28])
@pytest.mark.parametrize("size", [(16, 16), (17, 23), (33, 33)])
def test_output_shape_equals_input_shape(name: str, channels: int, size: tuple[int, int]) -> None:
    net = SMALL[name](channels)
    x = torch.rand(2, channels, *size)
    assert net(x, sigma=0.1).shape == x.shape


@pytest.mark.parametrize("name", MODELS)
def test_tiny_images_and_zero_depth(name: str) -> None:
    net = SMALL[name](1)
    for size in [(1, 1), (3, 5), (4, 4)]:
        x = torch.rand(1, 1, *size)
        assert net(x).shape == x.shape
    flat = DENOISERS[name](1, depth=0)
    assert flat(torch.rand(1, 1, 9, 7)).shape == (1, 1, 9, 7)


@pytest.mark.parametrize("name", MODELS)
def test_out_channels_without_residual(name: str) -> None:
    net = SMALL[name](3, out_channels=1, residual=False)
    assert net(torch.rand(2, 3, 17, 23)).shape == (2, 1, 17, 23)


@pytest.mark.parametrize("name", MODELS)
def test_wrong_input_raises(name: str) -> None:
    net = SMALL[name](3)
    with pytest.raises(InvalidArgumentError, match="x must"):
        net(torch.rand(2, 1, 8, 8))
    with pytest.raises(InvalidArgumentError, match="x must"):
        net(torch.rand(3, 8, 8))


# ----------------------------------------------------------------------------- sigma


@pytest.mark.parametrize("name", MODELS)
def test_sigma_forms(name: str) -> None:
    net = SMALL[name](1).eval()
    x = torch.rand(2, 1, 17, 23)
    with torch.no_grad():
        out_none = net(x)
        out_zero = net(x, 0.0)
        out_float = net(x, 0.2)
        out_0dim = net(x, torch.tensor(0.2))
        out_n = net(x, torch.tensor([0.2, 0.5]))
        out_n111 = net(x, torch.tensor([0.2, 0.5]).view(2, 1, 1, 1))
        out_second = net(x[1:], 0.5)
    for out in (out_none, out_float, out_0dim, out_n, out_n111):
        assert out.shape == x.shape
    torch.testing.assert_close(out_none, out_zero)
    torch.testing.assert_close(out_float, out_0dim)
    torch.testing.assert_close(out_n, out_n111)
    torch.testing.assert_close(out_n[:1], out_float[:1])
    torch.testing.assert_close(out_n[1:], out_second)
    assert not torch.allclose(out_zero, out_float)  # the output depends on sigma


@pytest.mark.parametrize("name", MODELS)
def test_sigma_ignored_without_noise_level(name: str) -> None:
    net = SMALL[name](1, noise_level=False).eval()
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(x, torch.tensor([0.3, 0.9])))


@pytest.mark.parametrize("name", MODELS)
def test_bad_sigma_raises(name: str) -> None:
    net = SMALL[name](1)
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(InvalidArgumentError, match="sigma"):
        net(x, torch.tensor([0.1, 0.2, 0.3]))
    with pytest.raises(InvalidArgumentError, match="sigma"):
        net(x, "0.1")


@pytest.mark.parametrize("name", MODELS)
def test_learnable_sigma_gets_gradient(name: str) -> None:
    net = SMALL[name](1)
    sigma = torch.tensor(0.1, requires_grad=True)
    net(torch.rand(1, 1, 12, 12), sigma).square().sum().backward()
    assert sigma.grad is not None and sigma.grad != 0


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("name", MODELS)
def test_gradients_reach_every_parameter(name: str) -> None:
    net = SMALL[name](3)
    net(torch.rand(2, 3, 17, 23), torch.tensor([0.1, 0.3])).square().sum().backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None, pname
        assert p.grad.abs().sum() > 0, pname


# ----------------------------------------------------------------------------- LoRA-friendliness


def _all_models() -> list[nn.Module]:
    return [SMALL[n](3) for n in MODELS] + [UNet(1), Transformer(1), UNet.preset("paper-cs"),
                                            Transformer.preset("paper-cs")]


def test_every_weight_layer_is_conv2d_or_linear() -> None:
    for net in _all_models():
        for name, module in net.named_modules():
            assert not isinstance(module, nn.ConvTranspose2d), name
            assert not isinstance(module, nn.modules.batchnorm._BatchNorm), name
            weight = getattr(module, "weight", None)
            if isinstance(weight, torch.Tensor) and weight.dim() > 1:
                assert type(module) in (nn.Conv2d, nn.Linear), name
            if isinstance(module, nn.Conv2d):
                assert module.groups == 1, name  # PEFT cannot merge grouped convs
        # The only other >1-dim parameters are the attention position-bias tables.
        for pname, p in net.named_parameters():
            owner = net.get_submodule(pname.rsplit(".", 1)[0]) if "." in pname else net
            if p.dim() > 1 and not isinstance(owner, (nn.Conv2d, nn.Linear)):
                assert pname.endswith("relative_position_bias_table"), pname


def test_transformer_attention_names_are_easy_to_target() -> None:
    names = weight_layer_names(Transformer(1, depth=2))
    for suffix in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"):
        assert [n for n in names if n.endswith(suffix)], suffix
    assert {"conv_in", "conv_out"} <= set(names)


@pytest.mark.parametrize("name", MODELS)
def test_peft_lora_wraps_every_weight_layer(name: str, tmp_path) -> None:
    net = SMALL[name](1)
    targets = weight_layer_names(net)
    pattern = "^(" + "|".join(re.escape(t) for t in targets) + ")$"
    x = torch.rand(2, 1, 17, 23)
    with torch.no_grad():
        before = net(x, 0.1)
    config = LoraConfig(r=2, lora_alpha=2, target_modules=pattern, init_lora_weights=False)
    model = get_peft_model(net, config)
    lora_layers = [n for n, m in model.named_modules() if hasattr(m, "lora_A") and "default" in m.lora_A]
    assert len(lora_layers) == len(targets)

    out = model(x, sigma=torch.tensor([0.1, 0.1]))
    assert out.shape == x.shape
    assert not torch.allclose(out, before)  # the adapters change the output
    out.square().sum().backward()
    lora_params = [(n, p) for n, p in model.named_parameters() if "lora_" in n]
    assert len(lora_params) == 2 * len(targets)
    for pname, p in lora_params:
        assert p.grad is not None and p.grad.abs().sum() > 0, pname
    base_trainable = [n for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n]
    assert base_trainable == []

    model.save_pretrained(tmp_path)  # PEFT reads model.config as a dict: it must not be a method
    assert (tmp_path / "adapter_model.safetensors").is_file()
    with torch.no_grad():
        merged = model.merge_and_unload()(x, 0.1)  # every layer can be merged (groups == 1)
    torch.testing.assert_close(merged, out.detach(), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- presets, config, registry


def test_parameter_counts_of_presets_and_defaults() -> None:
    def count(net: nn.Module) -> int:
        return sum(p.numel() for p in net.parameters())

    # Paper: CS U-Net Block-9 = 4.65M, CS Transformer Block-9 = 0.10M (9 stages).
    assert count(UNet.preset("paper-cs")) == 517_441
    assert abs(count(UNet.preset("paper-cs")) * 9 - 4.65e6) / 4.65e6 < 0.05
    assert count(Transformer.preset("paper-cs")) == 11_177
    assert abs(count(Transformer.preset("paper-cs")) * 9 - 0.10e6) / 0.10e6 < 0.05
    assert count(UNet(1)) == 129_697
    assert count(Transformer(1)) == 5_829
    assert UNet.preset("paper-cs", in_channels=28).config()["in_channels"] == 28
    for cls in (UNet, Transformer):
        with pytest.raises(InvalidArgumentError, match="name"):
            cls.preset("paper-xyz")


@pytest.mark.parametrize("name", MODELS)
def test_config_round_trip(name: str) -> None:
    net = SMALL[name](3).eval()
    assert isinstance(net.config, dict) and type(net.config()) is dict
    assert net.config()["in_channels"] == net.config["in_channels"] == 3
    config = json.loads(json.dumps(net.config()))
    clone = DENOISERS[name].from_config(config).eval()
    assert clone.config() == net.config()
    clone.load_state_dict(net.state_dict())
    x = torch.rand(1, 3, 9, 10)
    with torch.no_grad():
        torch.testing.assert_close(clone(x, 0.2), net(x, 0.2))


def test_build_denoiser() -> None:
    assert set(DENOISERS) == {"unet", "transformer"}
    assert isinstance(build_denoiser("unet", in_channels=1, width=4), UNet)
    assert isinstance(build_denoiser("transformer", in_channels=1, dim=8), Transformer)
    with pytest.raises(InvalidArgumentError, match="name.*resnet"):
        build_denoiser("resnet", in_channels=1)


@pytest.mark.parametrize(
    "cls, kwargs, argument",
    [
        (UNet, {"in_channels": 0}, "in_channels"),
        (UNet, {"in_channels": 1, "width": 0}, "width"),
        (UNet, {"in_channels": 1, "width": 2.5}, "width"),
        (UNet, {"in_channels": 1, "width": True}, "width"),
        (UNet, {"in_channels": 1, "depth": -1}, "depth"),
        (UNet, {"in_channels": 1, "out_channels": 0}, "out_channels"),
        (UNet, {"in_channels": 1, "out_channels": 2}, "residual"),
        (UNet, {"in_channels": 1, "upsample": "bicubic"}, "upsample"),
        (UNet, {"in_channels": 1, "act": "tanh"}, "act"),
        (UNet, {"in_channels": 1, "noise_level": "yes"}, "noise_level"),
        (Transformer, {"in_channels": 0}, "in_channels"),
        (Transformer, {"in_channels": 1, "dim": 0}, "dim"),
        (Transformer, {"in_channels": 1, "depth": -1}, "depth"),
        (Transformer, {"in_channels": 1, "heads": 0}, "heads"),
        (Transformer, {"in_channels": 1, "dim": 16, "heads": 3}, "heads"),
        (Transformer, {"in_channels": 1, "window_size": 0}, "window_size"),
        (Transformer, {"in_channels": 1, "mlp_ratio": 0}, "mlp_ratio"),
        (Transformer, {"in_channels": 1, "drop_path": 1.0}, "drop_path"),
        (Transformer, {"in_channels": 3, "out_channels": 1}, "residual"),
    ],
)
def test_bad_arguments_raise(cls: type[nn.Module], kwargs: dict, argument: str) -> None:
    with pytest.raises(InvalidArgumentError, match=argument):
        cls(**kwargs)
