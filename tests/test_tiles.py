"""Tiled restoration (lorun_peft.export.tiles, issue #34): tiled and whole agree for the zoo's CS, SR,
deblurring and inpainting networks; no seam; stages; bad inputs refused in one line each; progress
only on a terminal; an interrupted call leaves the operator as it was; an ONNX file of block CS tiles."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from lorun_peft import unfold, zoo
from lorun_peft.data.images import photographs
from lorun_peft.denoisers import UNet
from lorun_peft.errors import InvalidArgumentError
from lorun_peft.export import tiles
from lorun_peft.export.tiles import TiledNetwork
from lorun_peft.metrics import psnr
from lorun_peft.operators import CASSI, BlockCS, BlurDownsample
from lorun_peft.operators.base import fit_operator
from lorun_peft.unfold import measure_and_restore

# zoo network, image size, tile: every image is tiled along both axes
CASES = {"cs-0.25": ((160, 192), 128), "sr-x2-k0": ((96, 128), 80), "deblur-gauss": ((96, 128), 80),
         "inpaint-50": ((96, 128), 80)}


@pytest.fixture(scope="module")
def nets():
    return {name: zoo.load(name) for name in CASES}


@pytest.fixture(scope="module")
def sr(nets):
    """TiledNetwork(sr-x2-k0, **options), calibrated once for the module."""
    calibrated = TiledNetwork(nets["sr-x2-k0"])
    calibrated.receptive_margin(), calibrated.bytes_per_pixel()

    def make(**options):
        made = TiledNetwork(nets["sr-x2-k0"], **options)
        made._measured = dict(calibrated._measured)
        return made
    return make


def photo(size: tuple[int, int], channels: int = 1, name: str = "camera") -> torch.Tensor:
    return photographs([name], channels=channels)[0][None, :, 40:40 + size[0], 30:30 + size[1]]


def restore(net: nn.Module, x: torch.Tensor, **kwargs):
    with torch.no_grad():
        return measure_and_restore(net, x, **kwargs)


@pytest.mark.parametrize("name", sorted(CASES))
def test_tiled_and_whole_agree(nets, name):
    net, (size, tile) = nets[name], CASES[name]
    x = photo(size)
    tiled = TiledNetwork(net, tile=tile)
    y, _, whole, _ = restore(net, x)
    _, _, parts, _ = restore(tiled, x)
    rows, cols = tiled.plan(y)
    assert len(rows.spans) > 1 and len(cols.spans) > 1
    assert float((parts - whole).abs().max()) < 2e-3
    assert abs(float(psnr(parts.clamp(0, 1), x)) - float(psnr(whole.clamp(0, 1), x))) <= 0.05


def test_cs_tiles_align_to_blocks(nets):
    net = nets["cs-0.25"]
    x = photo((160, 200))  # 200 is not a multiple of the 32 block: the last tile ends on a partial block
    tiled = TiledNetwork(net, tile=128)
    with fit_operator(net.operator, x.shape[-2:]):
        y = net.operator.A(x)
        rows, cols = tiled.plan(y)
        assert (rows.length, cols.length) == (160, 200)
        for axis in (rows, cols):
            assert all(start % 32 == 0 for start, _ in axis.spans) and axis.spans[-1][1] == axis.length
            assert all((stop - start) % 32 == 0 for start, stop in axis.spans[:-1])
            assert torch.allclose(sum(torch.zeros(axis.length).index_add_(0, torch.arange(a, b), w.float())
                                      for (a, b), w in zip(axis.spans, axis.weights)), torch.ones(axis.length))
        with torch.no_grad():
            assert float((tiled(y) - net(y)).abs().max()) < 2e-3


@pytest.mark.parametrize("unit", [1, 8, 32])
def test_the_blending_weights_sum_to_one_and_skip_the_margins(unit):
    for margin in (0, 5, 17):
        tile = -(-(2 * margin + tiles.RAMP + unit) // unit) * unit
        for length in range(1, 300, 7):
            for size in (tile, tile + unit, 3 * tile):
                axis = tiles._axis(length, size, margin, unit)
                total = torch.zeros(length, dtype=torch.float64)
                for (a, b), w in zip(axis.spans, axis.weights):
                    assert a % unit == 0 and b - a <= size + unit - 1 and (w >= 0).all()
                    assert (a == 0 or (w[:margin] == 0).all()) and (b == length or (w[b - a - margin:] == 0).all())
                    total[a:b] += w
                assert axis.spans[0][0] == 0 and axis.spans[-1][1] == length
                assert torch.allclose(total, torch.ones(length, dtype=torch.float64))


def test_no_seam_along_tile_borders(nets):
    """The tiled-minus-whole difference is no larger where tiles are blended (and where one's
    margin begins) than inside the tiles, and its jumps across those lines no larger than elsewhere."""
    net = nets["deblur-gauss"]
    x = photo((160, 192), name="astronaut")
    tiled = TiledNetwork(net, tile=96)
    y, _, whole, _ = restore(net, x)
    _, _, parts, _ = restore(tiled, x)
    diff = (parts - whole)[0, 0]
    rows, cols = tiled.plan(y)

    def blended(axis):
        mask = torch.zeros(axis.length, dtype=torch.bool)
        for (a, b), w in zip(axis.spans, axis.weights):
            mask[a:b] |= (w > 0) & (w < 1)
        return mask

    border = blended(rows)[:, None] | blended(cols)[None, :]
    assert border.any() and (~border).any()
    assert float(diff[border].abs().max()) <= 1.5 * float(diff[~border].abs().max())
    jump = (diff[:, 1:] - diff[:, :-1]).abs()  # across columns
    across = blended(cols)[1:] & ~blended(cols)[:-1] | ~blended(cols)[1:] & blended(cols)[:-1]
    assert float(jump[:, across].max()) <= 1.5 * float(jump[:, ~across].max())


def test_return_stages_are_stitched(nets, sr):
    net = nets["sr-x2-k0"]
    x = photo((96, 128))
    tiled = sr(tile=80)
    with torch.no_grad(), fit_operator(net.operator, x.shape[-2:]):
        y = net.operator.A(x)
        whole, whole_stages = net(y, return_stages=True)
        parts, stages = tiled(y, return_stages=True)
    assert len(stages) == net.K and torch.equal(stages[-1], parts)
    assert float((parts - whole).abs().max()) < 2e-3
    assert all(float((a - b).abs().max()) < 4e-3 for a, b in zip(stages, whole_stages))  # within a grey level


def test_without_stages_no_stage_image_is_kept(nets, sr):
    net = nets["sr-x2-k0"]
    tiled = sr(tile=80)  # calibrated before
    y = net.operator.A(photo((96, 128)))
    peaks = {}
    for return_stages in (False, True):
        tracker = tiles._LiveBytes()
        with torch.no_grad(), tracker:
            tiled(y, return_stages=return_stages)
        peaks[return_stages] = tracker.peak
    image = 96 * 128 * 4
    assert peaks[True] - peaks[False] >= (net.K - 2) * image


def test_colour_images_and_the_wrapped_interface(nets, sr):
    net = nets["sr-x2-k0"]
    tiled = sr(tile=80)
    assert tiled.K == net.K and tiled.operator is net.operator and tiled.adapter_names == net.adapter_names
    assert tiled.unfold_config() == net.unfold_config() and next(tiled.parameters()) is next(net.parameters())
    assert not tiled.eval().training and not net.training
    assert "tile=80" in repr(tiled)
    x = photo((96, 128), channels=3, name="coffee")  # SR's colour policy: the luma restored by the network
    _, _, whole, _ = restore(net, x)
    _, _, parts, _ = restore(tiled, x)
    assert parts.shape == (1, 3, 96, 128) and float((parts - whole).abs().max()) < 2e-3


def test_small_images_run_whole_and_the_margin_is_measured_once(nets, monkeypatch):
    net = nets["inpaint-50"]
    tiled = TiledNetwork(net, tile=256)
    x = photo((96, 128))
    _, _, whole, _ = restore(net, x)
    _, _, parts, _ = restore(tiled, x)
    assert torch.equal(parts, whole)  # one tile: the network itself
    margin = tiled.receptive_margin()
    assert 8 <= margin <= 48 and tiled.smallest_tile() % tiled.unit == 0
    monkeypatch.setattr(tiles, "_measure_margin", lambda *a: pytest.fail("measured twice"))
    assert tiled.receptive_margin() == margin and TiledNetwork(net, margin=5).receptive_margin() == 5


def test_a_fixed_inpainting_mask_is_restored_in_tiles(nets):
    """A mask of the image's size (use_mask): each tile sees its part; the operator keeps the mask."""
    net = nets["inpaint-50"]
    x = photo((96, 128))
    mask = (torch.rand(96, 128, generator=torch.Generator().manual_seed(3)) > 0.5).float()
    before = net.operator.mask, net.operator.follow
    net.operator.use_mask(mask)
    try:
        tiled = TiledNetwork(net, tile=80)
        _, _, whole, _ = restore(net, x)
        _, _, parts, _ = restore(tiled, x)
        assert torch.equal(net.operator.mask, mask.to(net.operator.mask)) and not net.operator.follow
        assert float((parts - whole).abs().max()) < 2e-3
    finally:
        net.operator.mask, net.operator.follow = before


def test_the_default_tile_comes_from_the_memory(nets, sr):
    net = nets["sr-x2-k0"]
    y = net.operator.A(photo((96, 128)))
    tiled = sr(memory=1 << 40)
    assert tiled.layout(y).startswith("1 x 1 tiles")  # plenty of memory: whole
    image, per_tile = tiled.bytes_per_pixel()
    assert 0 < image < per_tile
    memory = int(96 * 128 * (image + 4) + 72**2 * per_tile / tiles.MEMORY_SHARE)  # a default tile of about 72
    small = sr(memory=memory)
    rows, _ = small.plan(y)
    assert len(rows.spans) > 1 and rows.spans[0][1] <= 80


# ---- bad input: one line each, saying what fits ------------------------------------------------
def test_a_tile_too_small_for_the_receptive_field(nets, sr):
    net = nets["sr-x2-k0"]
    tiled = sr(tile=32)
    smallest = tiled.smallest_tile()
    with pytest.raises(InvalidArgumentError, match=rf"^tile 32 is too small for this network: its receptive field "
                       rf"needs a margin of {tiled.receptive_margin()} px on each side; "
                       rf"the smallest tile that works is {smallest}$"):
        tiled(net.operator.A(photo((96, 128))))
    with torch.no_grad():
        sr(tile=smallest)(net.operator.A(photo((96, 128))))  # which works


def test_an_image_too_large_for_the_memory_even_tiled(nets, sr):
    net = nets["sr-x2-k0"]
    y = net.operator.A(photo((96, 128)))
    with pytest.raises(InvalidArgumentError, match=r"^restoring 96 x 128 with tile \d+ needs about \d+ MB \(the whole "
                       r"image \d+ MB, a tile \d+ MB\), more than the 0 MB available; the image is too large for the "
                       r"memory even tiled$"):
        sr(memory=1000)(y)
    image, per_tile = sr().bytes_per_pixel()
    memory = int(96 * 128 * (image + 4) + 100**2 * per_tile)
    with pytest.raises(InvalidArgumentError,
                       match=r"^restoring 96 x 128 with tile 128 needs .*; tile=\d+ would fit$") as info:
        sr(tile=128, memory=memory)(y)
    fits = int(str(info.value).rsplit("tile=", 1)[1].split()[0])
    with torch.no_grad():
        sr(tile=fits, memory=memory)(y)


def test_tasks_that_cannot_be_tiled_are_refused():
    net = unfold(UNet(4, width=4, depth=1), CASSI(torch.rand(16, 16), step=2, bands=4), K=2, algorithm="hqs")
    with pytest.raises(InvalidArgumentError, match=r"^tiling is not supported for task 'cassi' \(operator CASSI\); "
                       r"supported: cs, sr, deblur, inpaint; restore the image whole$"):
        TiledNetwork(net)
    sr = unfold(UNet(1, width=4, depth=1), BlurDownsample(torch.ones(3, 3), scale=2), K=2, algorithm="hqs")
    with pytest.raises(InvalidArgumentError, match=r"^tiling Whole is not supported for task 'sr': a network that runs "
                       r"whole tiles exactly only block CS measurements"):
        TiledNetwork(Whole(sr))


def test_bad_arguments(nets):
    net = nets["sr-x2-k0"]
    with pytest.raises(InvalidArgumentError, match=r"^tile must be an int >= 1, got 0$"):
        TiledNetwork(net, tile=0)
    with pytest.raises(InvalidArgumentError, match=r"^margin must be an int >= 0, got -1$"):
        TiledNetwork(net, margin=-1)
    with pytest.raises(InvalidArgumentError,
                       match=r"^y must be a tensor shaped \(N, C, h, w\), got torch.Size\(\[48, 64\]\)$"):
        TiledNetwork(net)(torch.rand(48, 64))


# ---- progress, interruption ---------------------------------------------------------------------
def test_progress_only_on_a_terminal(nets, sr, capsys, monkeypatch):
    net = nets["sr-x2-k0"]
    y = net.operator.A(photo((96, 128)))
    with torch.no_grad():
        sr(tile=80)(y)  # stderr is not a terminal here
        assert capsys.readouterr().err == ""
        monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
        sr(tile=80)(y)
        assert "tiles" in capsys.readouterr().err
        sr(tile=80, progress=False)(y)
        assert capsys.readouterr().err == ""


class Whole(nn.Module):
    """A network that runs whole (as an OnnxNetwork does): no stage loop to reach into."""

    def __init__(self, net: nn.Module, fail_at: int | None = None) -> None:
        super().__init__()
        self.inner, self.fail_at, self.calls = net, fail_at, 0

    operator = property(lambda self: self.inner.operator)
    K = property(lambda self: self.inner.K)

    def forward(self, y: torch.Tensor, return_stages: bool = False):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt
        return self.inner(y, return_stages=return_stages)


def test_whole_network_tiles_of_block_cs_and_ctrl_c(nets):
    net = nets["cs-0.25"]
    x = photo((160, 192))
    wrapped = Whole(net)
    tiled = TiledNetwork(wrapped, tile=128)
    with torch.no_grad(), fit_operator(net.operator, x.shape[-2:]):
        y = net.operator.A(x)
        whole = net(y)
        parts, stages = tiled(y, return_stages=True)
        assert float((parts - whole).abs().max()) < 2e-3 and len(stages) == net.K
        assert net.operator.image_size == (160, 192)
        wrapped.calls, wrapped.fail_at = 0, 2
        with pytest.raises(KeyboardInterrupt):
            tiled(y)
        assert net.operator.image_size == (160, 192)  # the tile's size undone


def test_ctrl_c_in_the_middle_leaves_the_operator_as_it_was(nets, monkeypatch):
    net = nets["inpaint-50"]
    calls = []
    denoise = net._denoise

    def interrupted(k, z):
        calls.append(k)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return denoise(k, z)

    y = net.operator.A(photo((96, 128)))
    mask = net.operator.mask.clone()
    tiled = TiledNetwork(net, tile=80)
    tiled.receptive_margin(), tiled.bytes_per_pixel()
    monkeypatch.setattr(net, "_denoise", interrupted)
    with torch.no_grad(), pytest.raises(KeyboardInterrupt):
        tiled(y)
    monkeypatch.undo()
    assert torch.equal(net.operator.mask, mask) and net.operator.follow


def test_an_onnx_file_of_block_cs_tiles(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from lorun_peft.export import OnnxNetwork, to_onnx

    torch.manual_seed(0)
    net = unfold(UNet(1, width=4, depth=1), BlockCS(0.25, block=16, init="orthogonal", learnable=False), K=2).eval()
    runner = OnnxNetwork(to_onnx(net, tmp_path / "cs.onnx", image_size=(32, 32)).path)
    x = photo((96, 128))
    tiled = TiledNetwork(runner, tile=64)
    with torch.no_grad(), fit_operator(net.operator, x.shape[-2:]):
        y = net.operator.A(x)
        rows, cols = tiled.plan(y)
        assert len(rows.spans) > 1 and all(a % 16 == 0 for a, _ in rows.spans + cols.spans)
        assert float((tiled(y) - runner(y)).abs().max()) < 2e-3
    fixed = OnnxNetwork(to_onnx(unfold(UNet(1, width=4, depth=1), BlurDownsample(torch.ones(3, 3), scale=2), K=2,
                                       algorithm="hqs").eval(), tmp_path / "sr.onnx", image_size=(32, 32)).path)
    with pytest.raises(InvalidArgumentError, match=r"^tiling sr.onnx is not supported for task 'sr'"):
        TiledNetwork(fixed)
