"""train(): checkpoints, exact resume, NaN handling and bad arguments."""

from __future__ import annotations

import pytest
import torch
from conftest import Interrupt, interrupt_after, MatrixOperator, TinyDenoiser

import lorun_peft
from lorun_peft.errors import CorruptFileError, IncompatibleBundleError, InvalidArgumentError, TrainingError
from lorun_peft.training.loop import CHECKPOINT_NAME


def make_net(share="lora"):
    torch.manual_seed(0)
    return lorun_peft.unfold(TinyDenoiser(), MatrixOperator(), K=2, share=share)


@pytest.mark.parametrize("share", ["lora", "base"])
def test_resume_is_bit_identical(tmp_path, images, share):
    data = images[:, :, :8, :8]
    straight = make_net(share)
    lorun_peft.train(straight, data, steps=6, batch_size=3, noise_sigma=0.01, progress=False)

    interrupted = make_net(share)
    handle = interrupt_after(interrupted, 4)
    with pytest.raises(Interrupt):
        lorun_peft.train(interrupted, data, steps=6, batch_size=3, noise_sigma=0.01, progress=False,
                         checkpoint_dir=tmp_path, checkpoint_every=2)
    handle.remove()
    resumed = make_net(share)  # a fresh process would rebuild the same network
    result = lorun_peft.train(resumed, data, steps=6, batch_size=3, noise_sigma=0.01, progress=False,
                              checkpoint_dir=tmp_path, checkpoint_every=2)
    assert result.step == 6 and len(result.losses) == 6
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, images):
    net = make_net()
    count = {"n": 0}

    def poison(module, args):
        count["n"] += 1
        if count["n"] == 3:
            return (args[0], args[1] * float("nan"))

    net.denoisers.register_forward_pre_hook(poison)
    with pytest.raises(TrainingError, match="loss became nan at step 2"):
        lorun_peft.train(net, images[:, :, :8, :8], steps=5, checkpoint_dir=tmp_path, checkpoint_every=1, progress=False)
    saved = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert saved["step"] == 1
    assert all(torch.isfinite(v).all() for v in saved["model"].values())


def test_corrupt_checkpoint(tmp_path, images):
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"not a checkpoint")
    with pytest.raises(CorruptFileError, match=CHECKPOINT_NAME):
        lorun_peft.train(make_net(), images[:, :, :8, :8], steps=2, checkpoint_dir=tmp_path, progress=False)


def test_checkpoint_of_another_network(tmp_path, images):
    lorun_peft.train(make_net("base"), images[:, :, :8, :8], steps=1, checkpoint_dir=tmp_path, progress=False)
    net = make_net("lora")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(IncompatibleBundleError, match="does not fit"):
        lorun_peft.train(net, images[:, :, :8, :8], steps=2, checkpoint_dir=tmp_path, progress=False)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"steps": 0}, "steps"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": 0.0}, "lr"),
        ({"schedule": "linear"}, "schedule"),
    ],
)
def test_bad_arguments(images, kwargs, match):
    args = {"steps": 1, **kwargs}
    with pytest.raises(InvalidArgumentError, match=match):
        lorun_peft.train(make_net(), images[:, :, :8, :8], progress=False, **args)


def test_bad_data(images):
    bad = images[:, :, :8, :8].clone()
    bad[5, 0, 1, 1] = float("inf")
    with pytest.raises(InvalidArgumentError, match=r"NaN or Inf in image\(s\) \[5\]"):
        lorun_peft.train(make_net(), bad, steps=1, progress=False)
    with pytest.raises(InvalidArgumentError, match="N x C x H x W"):
        lorun_peft.train(make_net(), torch.rand(8, 8), steps=1, progress=False)
    with pytest.raises(InvalidArgumentError, match="floating point"):
        lorun_peft.train(make_net(), torch.ones(2, 1, 8, 8, dtype=torch.uint8), steps=1, progress=False)


# ---- mixed precision ------------------------------------------------------------------------------
def half_net(algorithm: str):
    from lorun_peft.denoisers import UNet
    from lorun_peft.operators import BlockCS

    torch.manual_seed(0)
    return lorun_peft.unfold(UNet(1, width=4, depth=1), BlockCS(0.25, block=8), K=2, algorithm=algorithm, noise_level=True)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("algorithm", ["pgd", "hqs"])
def test_mixed_precision_trains_with_float32_weights(precision, algorithm):
    net = half_net(algorithm)
    before = [p.detach().clone() for p in net.parameters() if p.requires_grad]
    data = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    result = lorun_peft.train(net, data, steps=3, batch_size=2, precision=precision, val_data=data[:2], progress=False)
    assert all(torch.isfinite(torch.tensor(result.losses))) and result.val_psnr
    after = [p for p in net.parameters() if p.requires_grad]
    assert all(p.dtype == torch.float32 for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(before, after))


def test_fp16_keeps_its_gradient_scaler_in_the_checkpoint_and_resumes_exactly(tmp_path):
    data = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    options = dict(steps=4, batch_size=2, precision="fp16", progress=False, checkpoint_every=1)
    straight = half_net("pgd")
    lorun_peft.train(straight, data, checkpoint_dir=tmp_path / "a", **options)
    assert "scaler" in torch.load(tmp_path / "a" / CHECKPOINT_NAME, weights_only=True)
    interrupted = half_net("pgd")
    handle = interrupt_after(interrupted, 2)
    with pytest.raises(Interrupt):
        lorun_peft.train(interrupted, data, checkpoint_dir=tmp_path / "b", **options)
    handle.remove()
    resumed = half_net("pgd")
    lorun_peft.train(resumed, data, checkpoint_dir=tmp_path / "b", **options)
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()))


def test_precision_errors(images):
    with pytest.raises(InvalidArgumentError, match=r"precision must be one of \['fp32', 'bf16', 'fp16'\]"):
        lorun_peft.train(make_net(), images, steps=1, precision="int8", progress=False)
    from types import SimpleNamespace

    fake = SimpleNamespace(process_index=0, num_processes=1)
    with pytest.raises(InvalidArgumentError, match="accelerate launch --mixed_precision bf16"):
        lorun_peft.train(make_net(), images, steps=1, precision="bf16", accelerator=fake, progress=False)
