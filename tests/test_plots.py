"""The figures: every one has a title, labelled axes, a colour bar where colour carries a value,
stages named like the adapters, and each is written as a real PNG; bad input raises a clear error."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from lorun_peft import plots, unfold
from lorun_peft.denoisers import UNet
from lorun_peft.errors import InvalidArgumentError
from lorun_peft.operators import BlockCS


@pytest.fixture(scope="module")
def lorun_net():
    torch.manual_seed(0)
    net = unfold(UNet(1, width=4, depth=1), BlockCS(0.25, block=8), K=3, share="base")
    net.to_lora()
    with torch.no_grad():  # non-zero updates (PEFT starts B at zero)
        for name, p in net.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    return net


def images(n: int = 2, side: int = 16) -> list[torch.Tensor]:
    return [torch.rand(1, side, side, generator=torch.Generator().manual_seed(i)) for i in range(n)]


def assert_png(path, min_side: int = 200) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) >= min_side


def test_grid_has_titles_scores_and_insets(tmp_path):
    truth = images()
    noisy = [(x + 0.1 * torch.randn_like(x)).clamp(0, 1) for x in truth]
    fig = plots.draw_grid([truth, noisy], ["truth", "noisy"], title="a comparison", reference=0,
                          row_labels=["image 1", "image 2"], inset=(0.1, 0.1, 0.4))
    assert fig._suptitle.get_text() == "a comparison"
    top, bottom = fig.axes[0], fig.axes[3]  # axes are created row by row: (0, 0), (0, 1), (1, 0), (1, 1)
    assert [fig.axes[0].get_title(), fig.axes[1].get_title()] == ["truth", "noisy"]
    assert top.get_ylabel() == "image 1" and top.get_xlabel().startswith("reference")
    psnr = float(bottom.get_xlabel().split(" dB")[0])
    assert 10 < psnr < 40 and "SSIM" in bottom.get_xlabel()
    assert all(len(ax.child_axes) == 1 for ax in fig.axes[:4])  # every panel has its zoomed inset
    plots.image_grid(tmp_path / "grid.png", [truth, noisy], ["truth", "noisy"], title="t", reference=0)
    assert_png(tmp_path / "grid.png")


def textured(side: int = 96, top: int = 60, left: int = 12, size: int = 24, seed: int = 0) -> torch.Tensor:
    """A flat grey image with one square of random texture at (top, left)."""
    x = torch.full((1, side, side), 0.4)
    x[:, top : top + size, left : left + size] = torch.rand(1, size, size, generator=torch.Generator().manual_seed(seed))
    return x


def test_inset_lands_on_the_one_textured_region():
    truth = textured()
    smooth = truth.clone()
    smooth[:, 60:84, 12:36] = truth[:, 60:84, 12:36].mean()  # a method that smoothed the texture away
    noisy = (truth + 0.05 * torch.randn(truth.shape, generator=torch.Generator().manual_seed(1)) * (truth != 0.4)).clamp(0, 1)
    top, left, side = plots.inset_box([truth, smooth, noisy], side=0.25)
    s = round(side * 96)
    assert 60 <= round(top * 96) and round(top * 96) + s <= 84 and 12 <= round(left * 96) and round(left * 96) + s <= 36
    assert plots.inset_box([torch.zeros(1, 40, 40)] * 2, side=0.25) == (15 / 40, 15 / 40, 0.25)  # nothing differs: the centre


def test_inset_stays_away_from_the_border():
    truth = textured(top=0, left=0, size=16)  # texture in the very corner
    top, left, _ = plots.inset_box([truth, torch.full_like(truth, 0.4)], side=0.25, margin=0.1)
    assert (round(top * 96), round(left * 96)) == (10, 10)  # as near as the margin allows


def test_grid_takes_one_inset_box_per_row():
    rows = [textured(top=60, left=12), textured(top=8, left=60)]
    restored = [x.clamp(0.4, 0.4) for x in rows]
    boxes = [plots.inset_box([t, r]) for t, r in zip(rows, restored)]
    fig = plots.draw_grid([rows, restored], ["truth", "flat"], title="t", inset=boxes)
    for ax, (top, left, side) in zip((fig.axes[0], fig.axes[2]), boxes):  # each row's inset shows its own box
        inset = ax.child_axes[0]
        assert inset.get_xlim()[0] == pytest.approx(left * 96 - 0.5) and inset.get_ylim()[1] == pytest.approx(top * 96 - 0.5)
    with pytest.raises(InvalidArgumentError, match="1 inset boxes for 2 rows"):
        plots.draw_grid([rows, restored], ["truth", "flat"], title="t", inset=boxes[:1])


def test_grid_stretched_column_says_its_range():
    x0 = [3 * x for x in images()]
    fig = plots.draw_grid([images(), x0], ["truth", "x0"], title="t", reference=0, stretch=[1])
    assert "shown stretched from" in fig.axes[1].get_xlabel()


@pytest.mark.parametrize("kwargs, message", [
    (dict(columns=[], labels=[]), "0 columns for 0 labels"),
    (dict(labels=["one"]), "2 columns for 1 labels"),
    (dict(columns=[images(2), images(1)]), "same number of images"),
    (dict(reference=2), "reference must index one of the 2 columns"),
    (dict(row_labels=["only one"]), "1 row labels for 2 rows"),
    (dict(inset=(0.1, 0.1, 0.9)), "inset is (top, left, side)"),
    (dict(title=" "), "needs a title"),
], ids=["no-columns", "labels", "ragged", "reference", "row-labels", "inset", "title"])
def test_grid_rejects_bad_input(kwargs, message):
    arguments = {"columns": [images(), images()], "labels": ["a", "b"], "title": "t", **kwargs}
    with pytest.raises(InvalidArgumentError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plots.draw_grid(arguments.pop("columns"), arguments.pop("labels"), **arguments)


def test_to_display_rejects_a_batch():
    with pytest.raises(InvalidArgumentError, match=r"expected a C x H x W image, got shape \(1, 1, 4, 4\)"):
        plots.to_display(torch.rand(1, 1, 4, 4))


def test_line_chart_labels_title_and_legend(tmp_path):
    fig = plots.draw_lines({"a": [1.0, math.nan, 3.0], "b": [2.0, 2.5]}, x=[10, 20, 30], title="T",
                           xlabel="side (pixels)", ylabel="ratio")
    ax = fig.axes[0]
    assert (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) == ("T", "side (pixels)", "ratio")
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["a", "b"]
    plots.line_chart(tmp_path / "c.png", {"a": [1.0, 2.0]}, title="T", xlabel="x (s)", ylabel="y (dB)")
    assert_png(tmp_path / "c.png")


def test_stage_chart_names_stages_like_the_adapters(lorun_net, tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(plots, "save_figure", lambda path, fig: drawn.append(fig))
    plots.stage_chart(tmp_path / "s.png", {"LoRun-3": [20.0, 22.0, 23.0]}, title="per stage")
    ax = drawn[0].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == lorun_net.adapter_names == ["stage_0", "stage_1", "stage_2"]
    assert ax.get_ylabel() == "PSNR (dB)" and "stage" in ax.get_xlabel() and ax.get_title() == "per stage"


def test_lines_on_top_of_each_other_stay_told_apart():
    fig = plots.draw_lines({"a": [1.0, 2.0], "b": [1.0, 2.0], "c": [1.0, 2.0]}, title="t", xlabel="x", ylabel="y")
    styles = {(line.get_marker(), line.get_linestyle()) for line in fig.axes[0].get_lines()}
    assert len(styles) == 3


def test_stage_chart_with_a_reference_draws_the_differences(tmp_path):
    series = {"plug-and-play": [25.0, 26.0, 26.5], "Block-1": [25.0, 26.1, 26.7], "LoRun-3": [25.0, 26.2, 26.9]}
    fig = plots.draw_stages(series, title="per stage", reference="plug-and-play")
    top, bottom = fig.axes
    assert top.get_title() == "per stage" and bottom.get_ylabel() == "minus plug-and-play (dB)" and "stage" in bottom.get_xlabel()
    assert [line.get_ydata().tolist() for line in bottom.get_lines()] == [
        [0.0, 0.0, 0.0], pytest.approx([0.0, 0.1, 0.2]), pytest.approx([0.0, 0.2, 0.4])]
    styles = [(line.get_marker(), line.get_linestyle()) for line in top.get_lines()]
    assert len(set(styles)) == 3 and styles == [(line.get_marker(), line.get_linestyle()) for line in bottom.get_lines()]
    assert [t.get_text() for t in fig.legends[0].get_texts()][2] == "LoRun-3: 26.90 after the last stage"
    with pytest.raises(InvalidArgumentError, match="reference 'x' is none of the series"):
        plots.draw_stages(series, title="t", reference="x")
    plots.stage_chart(tmp_path / "s.png", series, title="t", reference="plug-and-play")
    assert_png(tmp_path / "s.png")


@pytest.mark.parametrize("series, x, message", [
    ({}, None, "at least one non-empty series"),
    ({"a": []}, None, "at least one non-empty series"),
    ({"a": [1.0, 2.0, 3.0]}, [1, 2], "x has 2 values for series of length 3"),
    ({"a": [math.nan, math.inf]}, None, "every value is NaN or infinite"),
], ids=["no-series", "empty-series", "short-x", "no-finite-value"])
def test_line_chart_rejects_bad_input(series, x, message):
    with pytest.raises(InvalidArgumentError, match=message):
        plots.draw_lines(series, x=x, title="t", xlabel="x", ylabel="y")


def test_line_chart_needs_axis_labels():
    with pytest.raises(InvalidArgumentError, match="every figure needs a ylabel"):
        plots.draw_lines({"a": [1.0]}, title="t", xlabel="x", ylabel="")


def test_heatmap_has_a_labelled_colour_bar():
    fig = plots.draw_heatmap(np.arange(6.0).reshape(2, 3), row_labels=["r0", "r1"], col_labels=["a", "b", "c"],
                             title="T", xlabel="layer", ylabel="stage", colorbar="ratio (no unit)")
    ax, bar = fig.axes
    assert (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) == ("T", "layer", "stage")
    assert bar.get_ylabel() == "ratio (no unit)"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["r0", "r1"]


def test_heatmap_rejects_a_shape_that_misses_its_labels():
    with pytest.raises(InvalidArgumentError, match=r"values \(2, 2\) do not match 2 x 3 labels"):
        plots.draw_heatmap(np.zeros((2, 2)), row_labels=["a", "b"], col_labels=["a", "b", "c"], title="T",
                           xlabel="x", ylabel="y", colorbar="c")


def test_lora_updates_figure(lorun_net, tmp_path):
    fig, shown = plots.draw_lora_updates(lorun_net, max_layers=2)
    assert len(shown) == 2 and fig._suptitle.get_text()
    k = len(lorun_net.adapter_names)
    panels, bars = fig.axes[: 2 * k], fig.axes[2 * k :]
    assert [ax.get_title() for ax in panels[:k]] == lorun_net.adapter_names
    assert len(bars) == 2 and all("Delta W" in bar.get_ylabel() and "units" in bar.get_ylabel() for bar in bars)
    assert panels[0].get_ylabel().startswith(shown[0]) and panels[-1].get_xlabel() == "in channel"
    assert plots.lora_update_figure(tmp_path / "u.png", lorun_net, layers=shown[:1]) == shown[:1]
    assert_png(tmp_path / "u.png")


def test_lora_norm_figure_returns_the_ratios(lorun_net, tmp_path):
    values = plots.lora_norm_figure(tmp_path / "n.png", lorun_net)
    assert values.shape == (3, len(plots.lora_deltas(lorun_net))) and (values > 0).all()
    assert_png(tmp_path / "n.png")


def test_lora_updates_reject_an_unknown_layer(lorun_net, tmp_path):
    with pytest.raises(InvalidArgumentError, match=r"no adapted layer named \['nope'\]"):
        plots.lora_update_figure(tmp_path / "u.png", lorun_net, layers=["nope"])
    assert not (tmp_path / "u.png").exists()


def test_lora_updates_need_a_lorun_network(tmp_path):
    net = unfold(UNet(1, width=4, depth=1), BlockCS(0.25, block=8), K=2, share="base")
    with pytest.raises(InvalidArgumentError, match="LoRA updates need a LoRun network"):
        plots.lora_update_figure(tmp_path / "u.png", net)


def test_bar_chart_writes_values_and_reference(tmp_path):
    fig = plots.draw_bars({"params": 0.25, "latency": 1.4}, title="T", xlabel="ratio to Block-9", reference=1.0)
    ax = fig.axes[0]
    assert (ax.get_title(), ax.get_xlabel()) == ("T", "ratio to Block-9")
    assert {t.get_text() for t in ax.texts} == {"0.25", "1.40"}  # each bar says its value
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["reference 1"]
    plots.save_figure(tmp_path / "b.png", fig)
    assert_png(tmp_path / "b.png", min_side=100)


def test_bar_chart_rejects_a_non_finite_value():
    with pytest.raises(InvalidArgumentError, match="all finite"):
        plots.draw_bars({"a": math.nan}, title="T", xlabel="x")
