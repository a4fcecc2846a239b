"""train(): checkpoints, exact resume, NaN handling and bad arguments."""

from __future__ import annotations

import pytest
import torch
from conftest import Interrupt, interrupt_after, MatrixOperator, TinyDenoiser

import lorun_peft
from lorun_peft.errors import CorruptFileError, IncompatibleBundleError, InvalidArgumentError, TrainingError
from lorun_peft.train import CHECKPOINT_NAME


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
