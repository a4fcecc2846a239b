"""Algorithm 1 end to end: datasets in train(), validation, two phases with exact resume, evaluate()."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import Interrupt, interrupt_after, MatrixOperator, TinyDenoiser
from PIL import Image
from torch.utils.data import TensorDataset

import lorun_peft
from lorun_peft.data.images import ImageFolder
from lorun_peft.denoisers import UNet
from lorun_peft.errors import InvalidArgumentError
from lorun_peft.training.evaluation import evaluate
from lorun_peft.operators import BlockCS
from lorun_peft.training.recipe import PAPER, train_two_phase
from lorun_peft.training.loop import train


def make_net(share="base", operator=None):
    torch.manual_seed(0)
    return lorun_peft.unfold(TinyDenoiser(), operator or MatrixOperator(), K=2, share=share)


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (14, 12), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    return tmp_path


def states_equal(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_train_on_image_folder_resumes_exactly(folder, tmp_path):
    data = ImageFolder(folder, patch_size=8)
    straight = make_net("lora")
    train(straight, data, steps=6, batch_size=2, progress=False)

    interrupted = make_net("lora")
    handle = interrupt_after(interrupted, 3)
    with pytest.raises(Interrupt):
        train(interrupted, data, steps=6, batch_size=2, progress=False, checkpoint_dir=tmp_path / "ck", checkpoint_every=2)
    handle.remove()
    resumed = make_net("lora")
    result = train(resumed, data, steps=6, batch_size=2, progress=False, checkpoint_dir=tmp_path / "ck", checkpoint_every=2)
    assert result.step == 6 and states_equal(straight, resumed)


def test_plain_dataset_and_bad_items(images):
    net = make_net("lora")
    result = train(net, TensorDataset(images[:, :, :8, :8]), steps=2, batch_size=3, progress=False)
    assert len(result.losses) == 2
    mixed = [torch.rand(1, 8, 8), torch.rand(1, 9, 9)]
    with pytest.raises(InvalidArgumentError, match="different shapes"):
        train(make_net("lora"), ListDataset(mixed), steps=3, batch_size=8, progress=False)
    with pytest.raises(InvalidArgumentError, match="NaN or Inf"):
        train(make_net("lora"), ListDataset([torch.full((1, 8, 8), float("nan"))]), steps=1, progress=False)
    with pytest.raises(InvalidArgumentError, match="empty dataset"):
        train(make_net("lora"), ListDataset([]), steps=1, progress=False)


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_validation_psnr_is_recorded(images):
    result = train(make_net("lora"), images[:, :, :8, :8], steps=4, batch_size=2, progress=False,
                   val_data=images[:2, :, :8, :8], val_every=2)
    assert [s for s, _ in result.val_psnr] == [2, 4]
    assert all(math.isfinite(v) for _, v in result.val_psnr)


@pytest.mark.parametrize("stop_after", [3, 6])  # forward calls: phase 1 makes 4, phase 2 starts at call 5
def test_two_phase_resumes_exactly_in_either_phase(images, tmp_path, stop_after):
    data = images[:, :, :8, :8]
    kwargs = dict(steps=4, batch_size=2, noise_sigma=0.01, progress=False, checkpoint_every=1, seed=3, phases=PAPER)
    straight = make_net("base")
    train_two_phase(straight, data, checkpoint_dir=tmp_path / "a", **kwargs)
    assert straight.share == "lora"

    interrupted = make_net("base")
    handle = interrupt_after(interrupted, stop_after)
    with pytest.raises(Interrupt):
        train_two_phase(interrupted, data, checkpoint_dir=tmp_path / "b", **kwargs)
    handle.remove()
    resumed = make_net("base")  # a new process rebuilds the Block-1 network and reruns the call
    result = train_two_phase(resumed, data, checkpoint_dir=tmp_path / "b", **kwargs)
    assert result.backbone.step == 4 and result.adapters.step == 4
    assert states_equal(straight, resumed)


def test_two_phase_evaluates_and_leaves_global_rng_alone(images):
    net = make_net("base")
    state = torch.get_rng_state()
    result = train_two_phase(net, images[:, :, :8, :8], steps=2, adapter_steps=3, batch_size=2, progress=False,
                             phases=PAPER, test_data=images[:2, :, :8, :8], keep_outputs=True)
    assert torch.equal(state, torch.get_rng_state())
    assert len(result.backbone.losses) == 2 and len(result.adapters.losses) == 3
    assert result.backbone_evaluation is not None and len(result.evaluation.restored) == 2
    assert len(result.evaluation.stage_psnr) == 2


def test_two_phase_arguments(images):
    data = images[:, :, :8, :8]
    with pytest.raises(InvalidArgumentError, match="share='base'"):
        train_two_phase(make_net("lora"), data, steps=1, phases=PAPER, progress=False)
    with pytest.raises(InvalidArgumentError, match="phases"):
        train_two_phase(make_net("base"), data, steps=1, phases=("warmup",), progress=False)
    net = make_net("lora")  # adapters alone continue a LoRun network
    result = train_two_phase(net, data, steps=1, phases=("adapters",), progress=False)
    assert result.backbone is None and len(result.adapters.losses) == 1


def recipe_net():
    torch.manual_seed(0)
    return lorun_peft.unfold(UNet(1, width=4, depth=1), BlockCS(0.5, block=8, seed=0), K=2, share="base", noise_level=True)


def test_recipe_pretrains_the_denoiser_then_sets_steps_then_trains_adapters(images):
    net = recipe_net()
    data, val = images[:, :, :16, :16], images[:2, :, :16, :16]
    result = train_two_phase(net, data, steps=2, adapter_steps=3, batch_size=2, val_data=val, progress=False)
    assert result.backbone is None and len(result.denoiser.losses) == 2 and len(result.adapters.losses) == 3
    assert net.share == "lora"
    chosen = result.schedule
    assert chosen is not None and set(chosen) >= {"sigma_first", "sigma_last", "psnr", "grid"}
    assert chosen["sigma_first"] >= chosen["sigma_last"]
    assert result.adapters.val_psnr  # validated during the adapter phase too


def test_recipe_denoiser_phase_trains_the_shared_denoiser(images):
    net = recipe_net()
    before = [p.detach().clone() for p in net.denoisers.denoiser.parameters()]
    train_two_phase(net, images[:, :, :16, :16], steps=2, batch_size=2, phases=("denoiser",), progress=False)
    assert net.share == "base"  # no adapters without phase "adapters"
    assert any(not torch.equal(a, b) for a, b in zip(before, net.denoisers.denoiser.parameters()))


def test_recipe_resumes_exactly_inside_the_denoiser_phase(images, tmp_path):
    data = images[:, :, :16, :16]
    kwargs = dict(steps=3, adapter_steps=2, batch_size=2, progress=False, checkpoint_every=1, seed=2)
    straight = recipe_net()
    train_two_phase(straight, data, checkpoint_dir=tmp_path / "a", **kwargs)
    interrupted = recipe_net()
    handle = interrupt_after(interrupted.denoisers.denoiser, 2)
    with pytest.raises(Interrupt):
        train_two_phase(interrupted, data, checkpoint_dir=tmp_path / "b", **kwargs)
    handle.remove()
    resumed = recipe_net()
    result = train_two_phase(resumed, data, checkpoint_dir=tmp_path / "b", **kwargs)
    assert result.denoiser.step == 3 and result.adapters.step == 2
    assert states_equal(straight, resumed)


def test_recipe_arguments(images):
    data = images[:, :, :8, :8]
    with pytest.raises(InvalidArgumentError, match="noise_level=True"):
        train_two_phase(make_net("base"), data, steps=1, progress=False)  # the default is the recipe
    with pytest.raises(InvalidArgumentError, match="in the order"):
        train_two_phase(recipe_net(), data, steps=1, phases=("adapters", "denoiser"), progress=False)
    with pytest.raises(InvalidArgumentError, match="share='base'"):
        train_two_phase(make_net("none"), data, steps=1, phases=("denoiser", "adapters"), progress=False)


def test_evaluate_images_of_any_size():
    torch.manual_seed(0)
    net = lorun_peft.unfold(TinyDenoiser(), BlockCS(0.5, block=8), K=3)
    images = [torch.rand(1, 20, 24), torch.rand(1, 16, 16), torch.rand(1, 8, 8)]
    result = evaluate(net, images, names=["a", "b", "c"])
    assert [name for name, _ in result.table.rows] == ["a", "b", "c"]
    rows = dict(result.table.rows)
    assert math.isfinite(rows["a"]["ssim"]) and math.isnan(rows["c"]["ssim"])  # 8 x 8 is under the 11 x 11 window
    assert len(result.stage_psnr) == 3
    assert result.stage_psnr[-1] == pytest.approx(sum(r["psnr"] for _, r in result.table.rows) / 3)
    assert net.operator.image_size is None  # restored after each image


def test_train_on_patches_the_block_does_not_divide():
    torch.manual_seed(0)
    net = lorun_peft.unfold(TinyDenoiser(), BlockCS(0.5, block=8), K=2)
    result = train(net, torch.rand(4, 1, 12, 12), steps=2, batch_size=2, progress=False)
    assert len(result.losses) == 2 and net.operator.image_size is None
