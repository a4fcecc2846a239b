"""The default inference engine (issue #34 item 1): each stage's denoiser on onnxruntime (block CS:
the whole network as one graph), prepared once per set of weights and cached on disk; outputs within
1e-4 of PyTorch; a stale or damaged cache entry is rebuilt, never trusted; anything it cannot take
stays in PyTorch."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("onnxruntime")

from lorun_peft import unfold  # noqa: E402
from lorun_peft.adapters import engine  # noqa: E402
from lorun_peft.adapters.sharing import InferenceStages, inference_engine  # noqa: E402
from lorun_peft.cli import main  # noqa: E402
from lorun_peft.denoisers import UNet  # noqa: E402
from lorun_peft.errors import InvalidArgumentError  # noqa: E402
from lorun_peft.operators import Blur, BlockCS, BlurDownsample, fit_operator  # noqa: E402


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LORUN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LORUN_ENGINE", "auto")
    return tmp_path / "cache" / "engine"


def network(seed: int = 0, operator=None) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = unfold(UNet(1, width=4, depth=1), operator or Blur(torch.ones(3, 3) / 9), K=2, noise_level=True)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return net.eval()


def restore(net: torch.nn.Module, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """(engine output, PyTorch output) of one measurement."""
    x = torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = net.operator.A(x)
        net.inference = "merged"
        reference = net(y)
        net.inference = "fast"
        return net(y), reference


@pytest.mark.parametrize("operator", [Blur(torch.ones(3, 3) / 9), BlurDownsample(torch.ones(3, 3), scale=2)], ids=["deblur", "sr"])
def test_the_engine_matches_pytorch_and_is_cached(operator, cache):
    out, reference = restore(network(0, operator))
    assert float((out - reference).abs().max()) <= 1e-4
    entries = list(cache.iterdir())
    assert len(entries) == 1 and sorted(p.name for p in entries[0].iterdir()) == ["manifest.json", "stage_0.onnx", "stage_1.onnx"]


def test_block_cs_runs_as_one_graph_at_every_size(cache):
    """Its exported file takes any size, so the whole restoration is one onnxruntime graph."""
    net = network(0, BlockCS(0.25, block=8))
    with torch.no_grad():
        for height, width in ((32, 32), (24, 40), (64, 16)):
            y = measured(net, height, width)
            out = net(y)
            with inference_engine("eager"):
                reference, stages = net(y, return_stages=True)
            assert float((out - reference).abs().max()) <= 1e-4, (height, width)
            assert net._fast._whole is not None and net._fast._onnx is None and not net._fast._whole_refused
        x, stages = net(y, return_stages=True)  # the stage images: stage by stage
        assert len(stages) == 2 and net._fast._onnx is not None and float((x - out).abs().max()) <= 1e-4
    entries = list(cache.iterdir())
    assert len(entries) == 2 and sum(len(list(e.glob("*.onnx"))) for e in entries) == 3  # one graph, two stages


def test_block_cs_at_sizes_off_its_blocks_is_right_whatever_came_before(cache, monkeypatch):
    """An image whose sides are not multiples of the block sets the operator's image_size (a
    setting, not a weight): the one graph must never reuse another size's crop."""
    net = network(0, BlockCS(0.25, block=8))
    run, ran = engine.OrtStage.__call__, []
    monkeypatch.setattr(engine.OrtStage, "__call__", lambda self, z, *extra: ran.append(z.shape[1]) or run(self, z, *extra))
    with torch.no_grad():
        for height, width in ((32, 32), (20, 28), (21, 27), (32, 32)):
            x = torch.rand(1, 1, height, width, generator=torch.Generator().manual_seed(height))
            with fit_operator(net.operator, (height, width)):
                y = net.operator.A(x)
                out = net(y)
                with inference_engine("eager"):
                    reference = net(y)
            assert out.shape == x.shape and float((out - reference).abs().max()) <= 1e-4, (height, width)
            assert ran[-1] == (16 if height % 8 == 0 and width % 8 == 0 else 1)  # a multiple of the block: y into the one graph
            ran.clear()


def test_a_measurement_that_does_not_fit_the_fitted_operator_is_still_refused(cache):
    net = network(0, BlockCS(0.25, block=8))
    y = measured(net, 16, 16)
    with torch.no_grad(), fit_operator(net.operator, (32, 32)):
        with pytest.raises(InvalidArgumentError, match=r"y of shape \(1, 16, 2, 2\) does not fit the operator"):
            net(y)


@pytest.mark.parametrize("change", ["adapter", "step", "operator"])
def test_the_one_graph_follows_every_weight(cache, change):
    net = network(0, BlockCS(0.25, block=8))
    y = measured(net, 32, 32)
    with torch.no_grad():
        first = net(y)
        if change == "adapter":
            next(p for name, p in net.named_parameters() if "lora_B" in name).add_(0.1)
        elif change == "step":
            next(net.steps.parameters()).add_(0.5)
        else:
            net.operator = BlockCS(0.25, block=8, seed=1)
            y = measured(net, 32, 32)
        second = net(y)
        with inference_engine("eager"):
            reference = net(y)
    assert not torch.equal(first, second) and float((second - reference).abs().max()) <= 1e-4
    assert len(list(cache.iterdir())) == 2


def test_a_network_that_does_not_run_as_one_graph_runs_stage_by_stage(cache, monkeypatch):
    net = network(0, BlockCS(0.25, block=8))
    y = measured(net, 32, 32)
    run = engine.OrtStage.__call__
    with torch.no_grad():
        net(y)  # prepared
        monkeypatch.setattr(engine.OrtStage, "__call__", lambda self, z, *extra: 1 / 0 if z.shape[1] > 1 else run(self, z, *extra))
        refused = net(y)  # the graph refuses y's shape: this call stage by stage
        assert net._fast._whole_refused == {tuple(y.shape)} and net._fast._onnx is not None
        real = engine.onnx_stages
        monkeypatch.setattr(engine, "onnx_stages", lambda s, *a, **k: 1 / 0 if len(s) == 1 else real(s, *a, **k))
        net = network(0, BlockCS(0.25, block=8))
        untraced = net(y)  # no graph at all: stage by stage, quietly
        assert len(net._fast._whole_failed) == 1 and net._fast._onnx is not None
        with inference_engine("eager"):
            reference = net(y)
    assert float((refused - reference).abs().max()) <= 1e-4 and float((untraced - reference).abs().max()) <= 1e-4


def test_a_second_process_reuses_the_cache_without_exporting(cache, monkeypatch):
    first, _ = restore(network(0))
    monkeypatch.setattr(engine, "_export", lambda *a: pytest.fail("exported again"))
    second, _ = restore(network(0))  # the same weights in a new network: the cached files
    assert torch.equal(first, second)


def test_other_weights_or_libraries_get_their_own_entry(cache, monkeypatch):
    restore(network(0))
    restore(network(1))
    assert len(list(cache.iterdir())) == 2
    monkeypatch.setattr(engine, "ENGINE_VERSION", "test")  # a new engine or library version: never the old file
    restore(network(0))
    assert len(list(cache.iterdir())) == 3


def test_a_damaged_entry_is_rebuilt_not_run(cache, capsys):
    restore(network(0))
    stage = next(cache.iterdir()) / "stage_1.onnx"
    data = bytearray(stage.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: still a loadable file, perhaps, but not the one written
    stage.write_bytes(bytes(data))
    out, reference = restore(network(0))
    assert "is damaged; rebuilding it" in capsys.readouterr().err
    assert float((out - reference).abs().max()) <= 1e-4


def measured(net: torch.nn.Module, height: int, width: int) -> torch.Tensor:
    x = torch.rand(1, 1, height, width, generator=torch.Generator().manual_seed(height * width))
    with torch.no_grad():
        return net.operator.A(x)


def test_odd_sides_after_a_first_call_on_the_denoisers_grid(cache, capsys):
    """A U-Net pads to its grid (2**depth): the graph must take every size, whatever size came first."""
    torch.manual_seed(0)
    net = unfold(UNet(1, width=4, depth=3), Blur(torch.ones(3, 3) / 9), K=2).eval()
    with torch.no_grad():
        for height, width in ((32, 40), (29, 35), (17, 64), (41, 23)):  # the first a multiple of 8
            y = measured(net, height, width)
            out = net(y)
            with inference_engine("eager"):
                reference = net(y)
            assert float((out - reference).abs().max()) <= 1e-4, (height, width)
            assert net._fast._onnx is not None and not net._fast._ort_refused  # onnxruntime ran every size
    assert "PyTorch" not in capsys.readouterr().err


def test_a_size_onnxruntime_refuses_is_restored_in_pytorch(cache, monkeypatch, capsys):
    net = network(0, Blur(torch.ones(3, 3) / 9))
    restore(net)  # prepared
    run = engine.OrtStage.__call__

    def refuse_odd(self, z, *extra):
        if z.shape[-1] % 2:
            raise RuntimeError("Non concat axis dimensions must match")
        return run(self, z, *extra)

    monkeypatch.setattr(engine.OrtStage, "__call__", refuse_odd)
    y = measured(net, 24, 27)
    with torch.no_grad():
        out = net(y)
        net.inference = "merged"
        reference = net(y)
        net.inference = "fast"
        net(y)
    assert float((out - reference).abs().max()) <= 1e-5
    err = capsys.readouterr().err
    assert err.count("lorun_peft: note: restoring (1, 1, 24, 27) in PyTorch (the onnxruntime engine refused it: "
                     "RuntimeError: Non concat axis dimensions must match)") == 1  # said once
    assert net._fast._ort_refused == {(1, 1, 24, 27)}


def test_the_weights_are_checked_once_per_restoration(cache, monkeypatch):
    net = network(0)
    y = measured(net, 32, 32)
    checks = []
    key = InferenceStages._weights_key
    monkeypatch.setattr(InferenceStages, "_weights_key", staticmethod(lambda d: checks.append(1) or key(d)))
    with torch.no_grad():
        first = net(y)
        assert len(checks) == 1  # not once per stage (K = 2)
        next(p for name, p in net.named_parameters() if "lora_B" in name).add_(0.1)  # between restorations
        second = net(y)
        net.inference = "merged"
        reference = net(y)
    assert len(checks) == 2 and not torch.equal(first, second)
    assert float((second - reference).abs().max()) <= 1e-4


def test_a_network_the_exporter_cannot_take_stays_in_pytorch(cache, monkeypatch, capsys):
    def refuse(*args):
        raise RuntimeError("an op the exporter lacks")

    monkeypatch.setattr(engine, "_export", refuse)
    net = network(0)
    out, reference = restore(net)
    assert torch.equal(out, reference) or float((out - reference).abs().max()) <= 1e-6
    assert "restoring in PyTorch" in capsys.readouterr().err and not cache.exists()
    restore(net)
    assert "restoring in PyTorch" not in capsys.readouterr().err  # said once


def test_training_gradients_and_the_eager_setting_do_not_prepare_it(cache):
    net = network(0)
    y = net.operator.A(torch.rand(1, 1, 32, 32))
    net(y)  # gradients on: PyTorch
    with inference_engine("eager"), torch.no_grad():
        net(y)
    net.train()
    with torch.no_grad():
        net(y)
    assert not cache.exists()


def test_threads_are_followed(cache):
    net = network(0)
    y = net.operator.A(torch.rand(1, 1, 32, 32))
    threads = torch.get_num_threads()
    try:
        with torch.no_grad():
            net(y)
            assert net._fast._onnx[0].threads == threads
            torch.set_num_threads(2)
            net(y)
            assert net._fast._onnx[0].threads == 2
    finally:
        torch.set_num_threads(threads)


def test_the_data_steps_run_on_one_thread_between_onnxruntime_stages(cache, monkeypatch):
    """PyTorch's OpenMP workers would spin on the cores onnxruntime needs; the count comes back."""
    net = network(0)
    y = measured(net, 32, 32)
    seen = []
    step = type(net.steps).forward
    monkeypatch.setattr(type(net.steps), "forward", lambda self, *a: seen.append(torch.get_num_threads()) or step(self, *a))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with torch.no_grad():
            net(y)
            assert seen == [2, 1] and torch.get_num_threads() == 2  # stage 0's data step came before onnxruntime
            assert net._fast._onnx[0].threads == 2
            monkeypatch.setattr(engine.OrtStage, "__call__", lambda *a: 1 / 0)  # fails mid-restoration: PyTorch
            seen.clear()
            out = net(y)
            assert seen == [2, 2] and torch.get_num_threads() == 2
            with inference_engine("eager"):
                assert torch.equal(out, net(y))
            monkeypatch.setattr(type(net.steps), "forward", lambda *a: 1 / 0)
            with pytest.raises(ZeroDivisionError):
                net(y)
            assert torch.get_num_threads() == 2  # given back, however the restoration ends
    finally:
        torch.set_num_threads(threads)


def test_old_entries_are_pruned(cache, monkeypatch):
    monkeypatch.setattr(engine, "KEEP", 2)
    for seed in range(3):
        restore(network(seed))
    assert len(list(cache.iterdir())) == 2


def test_an_unknown_engine_is_refused(monkeypatch):
    monkeypatch.setenv("LORUN_ENGINE", "tensorrt")
    with pytest.raises(InvalidArgumentError, match=r"the inference engine must be one of \['auto', 'onnxruntime', 'eager'\], got 'tensorrt'"):
        InferenceStages().engine_in_use()


def test_lorun_restore_runs_on_the_engine(cache, tmp_path, capsys):
    from PIL import Image
    import numpy as np

    photo = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)).save(photo)
    assert main(["restore", "--model", "zoo:cs-0.25", str(photo), str(tmp_path / "out.png")]) == 0
    assert len(list(cache.iterdir())) == 1
