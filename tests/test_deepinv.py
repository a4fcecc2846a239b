"""deepinv interop: a deepinv LinearPhysics works as the operator, a deepinv denoiser as the base.

Skipped when deepinv (an optional extra) is not installed.
"""

from __future__ import annotations

import pytest
import torch

import lorun_peft

dinv = pytest.importorskip("deepinv")


def physics():
    return dinv.physics.Downsampling(img_size=(1, 16, 16), filter="gaussian", factor=2)


@pytest.mark.parametrize("algorithm", ["pgd", "hqs"])
def test_deepinv_physics_and_denoiser_unwrapped(algorithm):
    torch.manual_seed(0)
    base = dinv.models.DnCNN(in_channels=1, out_channels=1, pretrained=None, depth=3, nf=8)
    op = physics()
    net = lorun_peft.unfold(base, op, K=3, algorithm=algorithm, noise_level=True,
                            adapter_options={"init_lora_weights": False})
    y = op.A(torch.rand(2, 1, 16, 16))
    x_hat = net(y)
    assert x_hat.shape == (2, 1, 16, 16)
    x_hat.square().mean().backward()
    for k in range(3):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.denoisers.adapter_parameters(k))


def test_hqs_uses_deepinv_closed_form_prox():
    """deepinv's Downsampling.prox_l2 is the FFT closed form; our SR operator must agree with it."""
    from lorun_peft.operators import BlurDownsample

    op = physics()
    x = torch.rand(1, 1, 16, 16, dtype=torch.float64)
    ours = BlurDownsample(op.filter[0, 0].double(), scale=2).double()
    y = op.A(x.float()).double()
    z = torch.rand_like(x)
    expected = op.prox_l2(z.float(), y.float(), 0.7).double()
    torch.testing.assert_close(ours.A(x), y, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.prox_l2(z, y, 0.7), expected, rtol=1e-4, atol=1e-4)
