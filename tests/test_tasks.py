"""The paper's three operators plug into unfold() with PGD and HQS, and short training helps."""

from __future__ import annotations

import pytest
import torch
from conftest import TinyDenoiser

import lorun_peft
from lorun_peft.data.images import synthetic_images
from lorun_peft.operators.kernels import gaussian_kernel
from lorun_peft.operators import CASSI, BlockCS, BlurDownsample


def cs_task():
    return BlockCS(0.25, block=8), synthetic_images(12, size=16, seed=3)


def sr_task():
    return BlurDownsample(gaussian_kernel(7, 1.2), scale=2), synthetic_images(12, size=16, seed=4)


def cassi_task():
    g = torch.Generator().manual_seed(0)
    mask = 0.2 + 0.8 * torch.rand(10, 10, generator=g)  # non-binary, like the real TSA-Net mask
    bands = synthetic_images(12 * 4, size=10, seed=5).view(12, 4, 10, 10)
    return CASSI(mask, step=2, bands=4), bands


TASKS = {"cs": cs_task, "sr": sr_task, "cassi": cassi_task}


@pytest.mark.parametrize("algorithm", ["pgd", "hqs"])
@pytest.mark.parametrize("task", sorted(TASKS))
def test_operator_plugs_in_and_training_lowers_the_loss(task, algorithm):
    torch.manual_seed(0)
    operator, images = TASKS[task]()
    net = lorun_peft.unfold(TinyDenoiser(channels=images.shape[1]), operator, K=3, algorithm=algorithm, gamma=50)
    y = operator.A(images)
    with torch.no_grad():
        x_hat, stages = net(y, return_stages=True)
        before = torch.mean((x_hat - images) ** 2).item()
    assert x_hat.shape == images.shape and len(stages) == 3
    lorun_peft.train(net, images, steps=40, lr=1e-2, batch_size=6, progress=False, schedule="constant")
    with torch.no_grad():
        y = operator.A(images)  # a learnable sampling matrix has changed too
        after = torch.mean((net(y) - images) ** 2).item()
    assert after < 0.8 * before, (before, after)


def test_learnable_sampling_matrix_is_trained_jointly():
    operator, images = cs_task()
    net = lorun_peft.unfold(TinyDenoiser(), operator, K=2)
    phi = net.operator.phi.detach().clone()
    lorun_peft.train(net, images, steps=3, progress=False)
    assert not torch.equal(phi, net.operator.phi)
    assert net.parameter_report().operator == phi.numel()
