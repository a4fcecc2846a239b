"""deepinv physics saved and rebuilt bit-exact (lorun_peft.operators.physics): whole networks, bundles
and swaps for seven physics classes with their noise models, and clear refusals for what cannot be
written as data or must never be built from a file.

Skipped when deepinv (an optional extra) is not installed.
"""

from __future__ import annotations

import importlib
import json

import pytest
import torch
from conftest import TinyDenoiser

import lorun_peft
from lorun_peft.errors import IncompatibleBundleError, InvalidArgumentError
from lorun_peft.operators import rebuild_operator
from lorun_peft.operators.physics import physics_config, physics_from_config
from lorun_peft.unfold import UnfoldedNetwork, unfold

dinv = pytest.importorskip("deepinv")
P = dinv.physics
CLASSES = ["Inpainting", "BlurFFT", "Blur", "Downsampling", "Denoising", "CompressedSensing", "MRI"]


def make_physics(name: str, seed: int = 0):
    """A small physics of class ``name`` with a noise model, and the shape of the images it measures."""
    torch.manual_seed(seed)
    image = (1, 1, 16, 16)
    g = torch.exp(-torch.arange(-4.0, 5.0) ** 2 / 2)
    kernel = (torch.outer(g, g) / torch.outer(g, g).sum()).view(1, 1, 9, 9)  # a Gaussian blur, sigma 1
    if name == "Inpainting":  # a ratio: deepinv keeps the mask generator beside the mask
        return P.Inpainting((1, 16, 16), mask=0.6, noise_model=P.GaussianNoise(0.05)), image
    if name == "BlurFFT":
        return P.BlurFFT((1, 16, 16), filter=kernel, noise_model=P.GaussianNoise(0.02)), image
    if name == "Blur":
        return P.Blur(filter=kernel, padding="circular", noise_model=P.PoissonNoise(gain=0.1)), image
    if name == "Downsampling":
        return P.Downsampling(img_size=(1, 16, 16), filter="bicubic", factor=2, noise_model=P.GaussianNoise(0.01)), image
    if name == "Denoising":
        return P.Denoising(P.GaussianNoise(0.1)), image
    if name == "CompressedSensing":
        return P.CompressedSensing(m=64, img_size=(1, 16, 16), noise_model=P.ZeroNoise()), image
    # MRI: complex images as 2 channels (real, imaginary), a random k-space mask
    return P.MRI(mask=(torch.rand(16, 16) > 0.5).float(), img_size=(16, 16), noise_model=P.GaussianNoise(0.01)), (1, 2, 16, 16)


def make_net(name: str, share: str = "lora", seed: int = 0) -> tuple[UnfoldedNetwork, tuple[int, ...]]:
    physics, image = make_physics(name, seed)
    torch.manual_seed(seed + 1)
    options = {"adapter_options": {"init_lora_weights": False}} if share == "lora" else {}
    net = unfold(TinyDenoiser(image[1]), physics, K=2, share=share, **options)
    with torch.no_grad():
        for p in net.steps.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net.eval(), image


def assert_same_physics(a, b, image: tuple[int, ...]) -> None:
    """Same class, state, A, A_adjoint, noise model and noise draws."""
    assert type(a) is type(b) and a is not b
    assert type(a.noise_model) is type(b.noise_model)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa)
    if hasattr(a.noise_model, "sigma"):
        assert torch.equal(a.noise_model.sigma, b.noise_model.sigma)
    x = torch.rand(image, generator=torch.Generator().manual_seed(3))
    y = a.A(x)
    assert torch.equal(b.A(x), y) and torch.equal(b.A_adjoint(y), a.A_adjoint(y))
    draws = []
    for physics in (a, b):
        torch.manual_seed(7)
        draws.append(physics(x))  # A, then the noise model
    assert torch.equal(*draws)


def measurement(net: UnfoldedNetwork, image: tuple[int, ...]) -> torch.Tensor:
    return net.operator.A(torch.rand((2, *image[1:]), generator=torch.Generator().manual_seed(5)))


# ---- round trips ----------------------------------------------------------------------------------
@pytest.mark.parametrize("share", ["lora", "base"])
@pytest.mark.parametrize("name", CLASSES)
def test_save_pretrained_rebuilds_the_physics_bit_exact(name, share, tmp_path):
    net, image = make_net(name, share)
    folder = net.save_pretrained(tmp_path / "net")
    saved = json.loads((folder / "unfold_config.json").read_text())["operator"]
    assert saved["type"] == "deepinv" and saved["class"] == name
    again = UnfoldedNetwork.from_pretrained(folder, denoiser=TinyDenoiser(image[1]))
    y = measurement(net, image)
    with torch.no_grad():
        assert torch.equal(again(y), net(y))
    assert_same_physics(net.operator, again.operator, image)


@pytest.mark.parametrize("name", CLASSES)
def test_a_bundle_rebuilds_and_swaps_the_physics(name, tmp_path):
    net, image = make_net(name)
    base, folder = net.save_base(tmp_path / "base"), net.save_adapters(tmp_path / "bundle")
    loaded = lorun_peft.load(base, folder, module=TinyDenoiser(image[1]))
    y = measurement(net, image)
    with torch.no_grad():
        assert torch.equal(loaded(y), net(y))
    assert_same_physics(net.operator, loaded.operator, image)
    # a live network on another physics of the same class takes the bundle's physics in
    other, _ = make_net(name, seed=0)
    other.operator = make_physics(name, seed=9)[0]
    other.load_adapters(folder)
    with torch.no_grad():
        assert torch.equal(other(y), net(y))
    assert_same_physics(net.operator, other.operator, image)


def test_a_swap_keeps_a_live_physics_of_the_same_settings(tmp_path):
    net, image = make_net("BlurFFT")
    folder = net.save_adapters(tmp_path / "bundle")
    live, _ = make_net("BlurFFT")
    kept = live.operator
    with torch.no_grad():
        kept.filter.mul_(0.5)  # same settings, another filter: the state is copied into the live physics
    live.load_adapters(folder)
    assert live.operator is kept and torch.equal(kept.filter, net.operator.filter)


def test_an_mri_of_another_size_is_rebuilt_in_a_swap(tmp_path):
    net, image = make_net("MRI")
    folder = net.save_adapters(tmp_path / "bundle")
    live, _ = make_net("MRI")
    live.operator = P.MRI(mask=torch.ones(8, 8), img_size=(8, 8))
    live.load_adapters(folder)
    assert_same_physics(net.operator, live.operator, image)


def test_the_config_format():
    physics, _ = make_physics("BlurFFT")
    config = physics_config(physics)
    assert config == json.loads(json.dumps(config))
    assert config["type"] == "deepinv" and config["class"] == "BlurFFT"
    assert config["args"]["img_size"] == [1, 16, 16] and config["tensor_args"] == {"filter": "filter"}
    assert config["noise"] == {"class": "GaussianNoise", "args": {"sigma": 0.02}, "tensor_args": {}, "rng": False}
    cs = physics_config(make_physics("CompressedSensing")[0])
    assert cs["args"]["m"] == 64 and cs["args"]["dtype"] == {"dtype": "float32"}


def test_a_seeded_noise_model_restarts_from_its_initial_state():
    physics = P.Denoising(P.GaussianNoise(0.1, rng=torch.Generator().manual_seed(4)))
    config = physics_config(physics)
    assert config["noise"]["rng"] is True
    twin = physics_from_config(config, physics.state_dict())
    x = torch.zeros(1, 1, 4, 4)
    physics.noise_model.reset_rng()
    assert torch.equal(twin(x), physics(x))


# ---- refusals -------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["save_pretrained", "save_adapters"])
def test_a_physics_holding_a_lambda_is_refused_and_nothing_is_written(method, tmp_path):
    physics = P.LinearPhysics(A=lambda x: 2 * x, A_adjoint=lambda y: 2 * y)
    net = unfold(TinyDenoiser(), physics, K=2)
    with pytest.raises(InvalidArgumentError, match=r"deepinv physics LinearPhysics cannot be saved: its attribute 'forw' holds a lambda"):
        getattr(net, method)(tmp_path / "net")
    assert not (tmp_path / "net").exists() and not any(tmp_path.iterdir())


def test_a_noise_model_of_its_own_or_not_allowed_is_refused(tmp_path):
    mask = torch.ones(1, 16, 16)
    physics = P.Inpainting((1, 16, 16), mask=mask, noise_model=P.NoiseModel(lambda x: x + 0.1))
    net = unfold(TinyDenoiser(), physics, K=2)
    with pytest.raises(InvalidArgumentError, match=r"Inpainting cannot be saved: its noise model NoiseModel's attribute 'noise_model' holds a lambda"):
        net.save_pretrained(tmp_path / "net")
    net.operator = P.Inpainting((1, 16, 16), mask=mask, noise_model=P.LaplaceNoise())
    with pytest.raises(InvalidArgumentError, match=r"Inpainting cannot be saved: its noise model LaplaceNoise is not one of \['GaussianNoise'"):
        net.save_pretrained(tmp_path / "net")
    assert not (tmp_path / "net").exists()


def test_an_attribute_set_after_construction_is_refused():
    physics = make_physics("Inpainting")[0]
    physics.tol = object()  # recorded as it is, but a non-JSON value is refused
    with pytest.raises(InvalidArgumentError, match=r"Inpainting cannot be saved: its argument 'tol' holds an object of type object"):
        physics_config(physics)
    blur = make_physics("Blur")[0]
    blur.img_size = (1, 16, 16)  # not an argument of Blur: a rebuild would lose it
    with pytest.raises(InvalidArgumentError, match=r"Blur cannot be saved: its attribute 'img_size' is \[1, 16, 16\] but None after a rebuild"):
        physics_config(blur)


def saved_config(name: str = "Inpainting") -> tuple[dict, dict]:
    physics = make_physics(name)[0]
    return physics_config(physics), physics.state_dict()


@pytest.mark.parametrize("forbidden", ["os.system", "deepinv.physics.Inpainting", "__class__", "NotAPhysicsAtAll", 3])
def test_a_class_outside_deepinv_physics_is_refused_before_any_import(forbidden, monkeypatch):
    config, state = saved_config()
    config["class"] = forbidden

    def no_import(*args, **kwargs):
        raise AssertionError(f"importlib.import_module{args} called")

    monkeypatch.setattr(importlib, "import_module", no_import)
    with pytest.raises(IncompatibleBundleError, match=r"only deepinv.physics LinearPhysics classes can be rebuilt"):
        rebuild_operator(config, "bundle x", state)
    config["class"] = "Inpainting"
    config["noise"]["class"] = forbidden
    with pytest.raises(IncompatibleBundleError, match=r"only deepinv.physics noise models"):
        rebuild_operator(config, "bundle x", state)


@pytest.mark.parametrize("name", ["Physics", "GaussianNoise", "PhaseRetrieval", "BernoulliSplittingMaskGenerator"])
def test_a_deepinv_physics_class_that_is_not_linear_is_refused(name):
    config, state = saved_config()
    config["class"] = name
    with pytest.raises(InvalidArgumentError, match=rf"deepinv class '{name}' is not allowed: only deepinv.physics LinearPhysics"):
        physics_from_config(config, state)


def test_an_edited_saved_network_is_refused_with_its_folder_named(tmp_path):
    net, _ = make_net("Inpainting", share="base")
    folder = net.save_pretrained(tmp_path / "net")
    path = folder / "unfold_config.json"
    data = json.loads(path.read_text())
    data["operator"]["class"] = "os.system"
    path.write_text(json.dumps(data))
    with pytest.raises(IncompatibleBundleError, match=r"its operator 'deepinv.physics.os.system' cannot be rebuilt here: .*only deepinv.physics"):
        UnfoldedNetwork.from_pretrained(folder, denoiser=TinyDenoiser())


def test_missing_tensors_and_bad_arguments_are_named():
    config, state = saved_config("BlurFFT")
    with pytest.raises(InvalidArgumentError, match=r"BlurFFT needs the saved operator tensors \['filter'\]"):
        physics_from_config(config)
    config["args"]["no_such_argument"] = 1
    with pytest.raises(InvalidArgumentError, match=r"BlurFFT has no arguments \['no_such_argument'\]"):
        physics_from_config(config, state)
    del config["args"]["no_such_argument"]
    config["args"]["img_size"] = "sixteen"
    with pytest.raises(InvalidArgumentError, match="BlurFFT cannot be rebuilt from its config and state"):
        physics_from_config(config, state)
    with pytest.raises(InvalidArgumentError, match="needs exactly the keys"):
        physics_from_config({"type": "deepinv", "class": "BlurFFT"}, state)


def test_without_deepinv_the_error_says_what_to_install(monkeypatch):
    import sys

    config, state = saved_config()
    monkeypatch.setitem(sys.modules, "deepinv.physics", None)  # import deepinv.physics now fails
    with pytest.raises(IncompatibleBundleError, match=r"deepinv.physics.Inpainting: pip install deepinv"):
        rebuild_operator(config, "bundle x", state)


@pytest.mark.parametrize("name", ["BlurFFT", "Downsampling", "MRI"])
def test_a_float64_network_keeps_its_physics_complex_tensors(name, tmp_path):
    net, image = make_net(name, share="base")
    net = net.double()
    y = net.operator.A(torch.rand((2, *image[1:]), dtype=torch.float64, generator=torch.Generator().manual_seed(5)))
    again = UnfoldedNetwork.from_pretrained(net.save_pretrained(tmp_path / "net"), denoiser=TinyDenoiser(image[1]))
    with torch.no_grad():
        assert torch.equal(again(y), net(y))
    before, after = net.operator.state_dict(), again.operator.state_dict()
    assert {k: v.dtype for k, v in before.items()} == {k: v.dtype for k, v in after.items()}
    half = UnfoldedNetwork.from_pretrained(net.save_pretrained(tmp_path / "half", storage_dtype="float16"),
                                           denoiser=TinyDenoiser(image[1]))
    with torch.no_grad():
        assert torch.allclose(half(y), net(y), atol=5e-2)
