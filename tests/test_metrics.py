"""PSNR, SSIM (against scikit-image), the Y channel, per-band metrics and the results table."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lorun_peft.errors import InvalidArgumentError
from lorun_peft.metrics import MetricTable, band_psnr, gaussian_window, psnr, rgb_to_y, shave, ssim


def noisy(shape, sigma, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.avg_pool2d(torch.rand(shape, generator=g), 3, 1, 1)
    return x, (x + sigma * torch.randn(shape, generator=g)).clamp(0, 1)


def test_psnr_per_image():
    x = torch.zeros(2, 1, 4, 4)
    y = x.clone()
    y[0] += 0.1
    y[1] += 0.01
    assert torch.allclose(psnr(y, x), torch.tensor([20.0, 40.0]))
    assert torch.allclose(psnr(y * 255, x * 255, data_range=255.0), torch.tensor([20.0, 40.0]))


@pytest.mark.parametrize("shape", [(2, 1, 32, 32), (1, 3, 37, 41), (1, 2, 11, 11)])
def test_ssim_matches_scikit_image(shape):
    metrics = pytest.importorskip("skimage.metrics")
    x, y = noisy(shape, 0.1)
    ours = ssim(y, x)
    for i in range(shape[0]):
        ref = metrics.structural_similarity(
            y[i].numpy(), x[i].numpy(), gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
            data_range=1.0, channel_axis=0,
        )
        assert abs(float(ours[i]) - ref) < 1e-5


def test_ssim_window_is_the_papers():
    w = gaussian_window()
    assert w.shape == (11, 11) and abs(float(w.sum()) - 1) < 1e-12
    assert float(w[5, 5]) == float(w.max())


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), sigma=st.floats(0.01, 0.3))
def test_ssim_properties(seed, sigma):
    x, y = noisy((1, 1, 16, 16), sigma, seed)
    assert float(ssim(x, x)) == pytest.approx(1.0, abs=1e-9)
    assert float(ssim(x, y)) == pytest.approx(float(ssim(y, x)), abs=1e-9)
    assert float(ssim(x, y)) < 1.0


def test_ssim_decreases_with_noise():
    values = [float(ssim(noisy((1, 1, 48, 48), s)[1], noisy((1, 1, 48, 48), s)[0])) for s in (0.01, 0.05, 0.1, 0.2, 0.4)]
    assert values == sorted(values, reverse=True)


def test_ssim_per_channel_and_errors():
    x, y = noisy((2, 4, 16, 16), 0.1)
    per = ssim(y, x, per_channel=True)
    assert per.shape == (2, 4) and torch.allclose(per.mean(1), ssim(y, x))
    with pytest.raises(InvalidArgumentError, match="at least 11 x 11"):
        ssim(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8))
    with pytest.raises(InvalidArgumentError, match="differ in shape"):
        ssim(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 17))


def test_y_channel_bt601():
    white, black = torch.ones(1, 3, 1, 1), torch.zeros(1, 3, 1, 1)
    assert float(rgb_to_y(white)) * 255 == pytest.approx(235.0)
    assert float(rgb_to_y(black)) * 255 == pytest.approx(16.0)
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    assert float(rgb_to_y(red)) * 255 == pytest.approx(16 + 65.481)
    with pytest.raises(InvalidArgumentError):
        rgb_to_y(torch.rand(1, 1, 2, 2))


def test_band_psnr_averages_bands():
    x = torch.zeros(1, 2, 4, 4)
    y = x.clone()
    y[:, 0] += 0.1  # 20 dB
    y[:, 1] += 0.01  # 40 dB
    assert float(band_psnr(y, x)) == pytest.approx(30.0)
    assert float(psnr(y, x)) < 30.0  # pooled MSE is dominated by the worse band


def test_shave():
    assert shave(torch.rand(1, 1, 10, 12), 2).shape == (1, 1, 6, 8)
    assert shave(torch.rand(1, 1, 10, 12), 0).shape == (1, 1, 10, 12)


def test_metric_table_text_csv_json():
    table = MetricTable(["psnr", "ssim"])
    table.add("a.png", psnr=30.0, ssim=0.9)
    table.add("b.png", psnr=31.0, ssim=0.7)
    text = str(table)
    assert "a.png" in text and "mean" in text and "30.50" in text and "0.8000" in text
    assert table.to_csv().splitlines() == ["image,psnr,ssim", "a.png,30.0000,0.9000", "b.png,31.0000,0.7000", "mean,30.5000,0.8000"]
    parsed = json.loads(table.to_json())
    assert parsed["mean"]["psnr"] == 30.5 and parsed["images"][1]["image"] == "b.png"
    with pytest.raises(InvalidArgumentError, match="lacks"):
        table.add("c.png", psnr=1.0)
    assert math.isnan(MetricTable(["psnr"]).mean()["psnr"])
