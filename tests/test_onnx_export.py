"""ONNX export (issue #25): every task's network runs on onnxruntime as it does in PyTorch; the file
says what it restores; wrong inputs are refused with a message; `lorun export`, `lorun restore`
and `lorun eval` on an .onnx file; SR's data step is the same with the real-valued tiling.

Runs after tests/test_faults.py and test_bundle.py, in their worker (tests/conftest.py's
FORKS_THEN_EXPORTS; the package's export doctests after it): a process that has exported leaves a
state that aborts the autograd of children it forks ("Invalid thread pool" from torch's
pthreadpool), and those two fork children that train."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from lorun_peft import unfold, zoo  # noqa: E402
from lorun_peft.cli import main  # noqa: E402
from lorun_peft.denoisers import UNet  # noqa: E402
from lorun_peft.errors import CorruptFileError, ExportError, InvalidArgumentError  # noqa: E402
from lorun_peft.export import OnnxNetwork, to_onnx  # noqa: E402
from lorun_peft.export import writer  # noqa: E402
from lorun_peft.metrics import psnr  # noqa: E402
from lorun_peft.operators import CASSI, BlockCS, BlurDownsample  # noqa: E402
from lorun_peft.operators.kernels import kernel_bank  # noqa: E402
from lorun_peft.operators.sr import _tile  # noqa: E402
from lorun_peft.steps import geometric  # noqa: E402


def smooth(channels: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A smooth test image in [0, 1] (random images make PSNR meaningless)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, channels, height // 8 + 1, width // 8 + 1, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)


def trained_like(operator, channels: int, algorithm: str, K: int = 3):  # noqa: N803
    """A small LoRun network whose adapters and steps are not at their (trivial) start."""
    net = unfold(UNet(in_channels=channels, width=8, depth=2), operator, K, algorithm=algorithm, noise_level=True)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "lora_B" in name or "lora_A" in name:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
        net.steps.initialise(step=0.9, sigma=geometric(0.1, 0.02, K))
    return net.eval()


TASKS = {
    "cs": lambda: (BlockCS(0.25, block=16, linear_estimate=True, init="orthogonal", learnable=False), 1, "pgd", (64, 48)),
    "sr": lambda: (BlurDownsample(kernel_bank()[4], scale=2, channels=1), 1, "hqs", (48, 64)),
    "cassi": lambda: (CASSI(torch.rand(32, 40, generator=torch.Generator().manual_seed(2)), step=2, bands=4), 4, "hqs", (32, 40)),
}


@pytest.fixture(scope="module", params=sorted(TASKS))
def exported(request, tmp_path_factory):
    operator, channels, algorithm, size = TASKS[request.param]()
    net = trained_like(operator, channels, algorithm)
    path = tmp_path_factory.mktemp(request.param) / f"{request.param}.onnx"
    report = to_onnx(net, path, image_size=size)
    return request.param, net, report, size, channels


def test_onnxruntime_restores_as_pytorch_does(exported):
    task, net, report, (height, width), channels = exported
    assert report.path.is_file() and report.max_abs_diff <= 1e-4
    runner = OnnxNetwork(report.path)
    x = smooth(channels, height, width)
    with torch.no_grad():
        y = net.operator.A(x)
        expected, expected_stages = net(y, return_stages=True)
    got, stages = runner(y, return_stages=True)
    assert float((got - expected.clamp(0, 1)).abs().max()) <= 1e-4
    assert len(stages) == net.K and float((stages[0] - expected_stages[0].clamp(0, 1)).abs().max()) <= 1e-4
    assert abs(float(psnr(got, x)) - float(psnr(expected.clamp(0, 1), x))) <= 0.01


def test_the_file_says_what_it_restores(exported):
    task, net, report, size, channels = exported
    runner = OnnxNetwork(report.path)
    meta = runner.metadata
    assert meta["task"] == task and meta["value_range"] == "[0, 1]" and meta["input"] == "measurement"
    assert runner.config["unfold"]["K"] == net.K and runner.config["channels"] == channels
    assert json.loads(meta["config"])["operator"]["type"] == net.operator.config()["type"]
    if task == "cs":
        assert meta["sampling"] == net.operator.sampling_fingerprint
        assert meta["image_size"] == "any multiple of 16" and report.input_shape == ["batch", 64, "rows", "cols"]
    else:
        assert json.loads(meta["image_size"]) == list(size) and report.input_shape[0] == "batch"
    x = smooth(channels, *size)
    assert torch.allclose(runner.operator.A(x), net.operator.A(x), atol=1e-6)  # the operator rebuilt from the file


def test_batches_of_any_size_and_cs_grids_of_any_size(exported):
    task, net, report, size, channels = exported
    runner = OnnxNetwork(report.path)
    sizes = [size, (size[0] + 16, size[1] + 32)] if task == "cs" else [size]
    for height, width in sizes:
        x = torch.cat([smooth(channels, height, width, seed) for seed in range(3)])
        with torch.no_grad():
            expected = net(net.operator.A(x)).clamp(0, 1)
        assert float((runner(net.operator.A(x)) - expected).abs().max()) <= 1e-4


def test_a_measurement_of_the_wrong_size_is_refused(exported):
    task, net, report, size, channels = exported
    runner = OnnxNetwork(report.path)
    y = net.operator.A(smooth(channels, *size))
    wrong = y[:, :-1] if task == "cs" else y[..., :-2]
    with pytest.raises(InvalidArgumentError, match=rf"{task}.onnx takes a measurement shaped \(N, "):
        runner(wrong)
    if task != "cs":
        with pytest.raises(InvalidArgumentError, match=f"export the model again with --image-size"):
            runner(wrong)


def test_a_file_that_simulates_takes_clean_images(tmp_path):
    operator, channels, algorithm, size = TASKS["sr"]()
    net = trained_like(operator, channels, algorithm)
    report = to_onnx(net, tmp_path / "sim.onnx", image_size=size, simulate=True)
    runner = OnnxNetwork(report.path)
    x = smooth(1, *size)
    with torch.no_grad():
        expected = net(operator.A(x)).clamp(0, 1)
    assert runner.simulates and report.input_name == "image"
    assert float((runner(x) - expected).abs().max()) <= 1e-4


def test_real_valued_tiling_equals_complex_repeat():
    v = torch.randn(2, 3, 5, 4, dtype=torch.complex64)
    for s in (2, 3):
        assert torch.equal(_tile(v, s), v.repeat(1, 1, s, s))


# ------------------------------------------------------------------------------------ bad input
def test_bad_arguments_are_refused(tmp_path):
    operator, channels, algorithm, _ = TASKS["sr"]()
    net = trained_like(operator, channels, algorithm, K=2)
    with pytest.raises(InvalidArgumentError, match="must end in .onnx"):
        to_onnx(net, tmp_path / "model.bin")
    with pytest.raises(InvalidArgumentError, match="multiples of the operator's scale 2, got 33 x 64"):
        to_onnx(net, tmp_path / "m.onnx", image_size=(33, 64))
    with pytest.raises(InvalidArgumentError, match=r"image_size must be \(height, width\)"):
        to_onnx(net, tmp_path / "m.onnx", image_size=(32,))
    with pytest.raises(InvalidArgumentError, match="exports an UnfoldedNetwork"):
        to_onnx(torch.nn.Conv2d(1, 1, 3), tmp_path / "m.onnx")
    with pytest.raises(InvalidArgumentError, match="atol must be a positive number"):
        to_onnx(net, tmp_path / "m.onnx", atol=-1)
    cassi = trained_like(TASKS["cassi"]()[0], 4, "hqs", K=2)
    with pytest.raises(InvalidArgumentError, match="restores cubes of its mask's size 32 x 40, not 64 x 64"):
        to_onnx(cassi, tmp_path / "m.onnx", image_size=(64, 64))
    assert not list(tmp_path.iterdir())


def test_past_the_tolerance_nothing_is_written(tmp_path, monkeypatch):
    operator, channels, algorithm, size = TASKS["cs"]()
    net = trained_like(operator, channels, algorithm, K=2)
    target = tmp_path / "m.onnx"
    target.write_bytes(b"the previous export")
    monkeypatch.setattr(writer, "compare", lambda *args: 0.5)
    with pytest.raises(ExportError, match=r"differs from PyTorch by 0.5 \(max abs\), more than atol=0.0001"):
        to_onnx(net, target, image_size=size)
    assert target.read_bytes() == b"the previous export" and [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_damaged_or_foreign_files_are_refused(tmp_path):
    damaged = tmp_path / "damaged.onnx"
    damaged.write_bytes(b"not a protobuf")
    with pytest.raises(CorruptFileError, match="is not a readable ONNX file"):
        OnnxNetwork(damaged)
    import onnx

    foreign = tmp_path / "foreign.onnx"
    node = onnx.helper.make_node("Identity", ["x"], ["y"])
    value = lambda name: onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [1])  # noqa: E731
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph([node], "g", [value("x")], [value("y")])), foreign)
    with pytest.raises(CorruptFileError, match="has no lorun_peft metadata"):
        OnnxNetwork(foreign)
    with pytest.raises(FileNotFoundError, match="ONNX file not found"):
        OnnxNetwork(tmp_path / "missing.onnx")


# ------------------------------------------------------------------------------ the command line
def png(path, height: int, width: int):
    from PIL import Image

    Image.fromarray((smooth(1, height, width)[0, 0].numpy() * 255).round().astype(np.uint8)).save(path)
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def zoo_cs(tmp_path_factory):
    path = tmp_path_factory.mktemp("zoo") / "cs.onnx"
    assert main(["export", "--model", "zoo:cs-0.25", str(path)]) == 0
    return path


def test_lorun_export_then_restore_a_measurement(capsys, tmp_path, zoo_cs):
    image = png(tmp_path / "photo.png", 64, 96)
    code, out, _ = run(capsys, "measure", "--model", "zoo:cs-0.25", image, tmp_path / "y.npz")
    assert code == 0, out
    code, out, err = run(capsys, "restore", "--measurement", "--model", zoo_cs, tmp_path / "y.npz", tmp_path / "onnx.npy")
    assert code == 0, err
    assert run(capsys, "restore", "--measurement", "--model", "zoo:cs-0.25", tmp_path / "y.npz", tmp_path / "torch.npy")[0] == 0
    assert np.abs(np.load(tmp_path / "onnx.npy") - np.load(tmp_path / "torch.npy")).max() <= 1e-4


def test_lorun_restore_refuses_a_measurement_of_another_sampling(capsys, tmp_path, zoo_cs):
    image = png(tmp_path / "photo.png", 64, 64)
    assert run(capsys, "measure", "--model", "zoo:cs-0.10", image, tmp_path / "y.npz")[0] == 0
    code, _, err = run(capsys, "restore", "--measurement", "--model", zoo_cs, tmp_path / "y.npz", tmp_path / "x.png")
    expected = zoo.load("cs-0.25").operator.sampling_fingerprint
    assert code == 2 and f"but this model expects sampling {expected}" in err and "Traceback" not in err


def test_lorun_eval_of_the_file_equals_the_network(capsys, zoo_cs):
    code, onnx_out, err = run(capsys, "eval", "--model", zoo_cs)
    assert code == 0, err
    code, torch_out, _ = run(capsys, "eval", "--model", "zoo:cs-0.25")
    mean = lambda text: [float(v) for v in next(l for l in text.splitlines() if l.startswith("mean")).split()[1:]]  # noqa: E731, E741
    assert np.allclose(mean(onnx_out), mean(torch_out), atol=0.01)


def test_commands_that_need_pytorch_refuse_an_onnx_file(capsys, zoo_cs, tmp_path):
    code, _, err = run(capsys, "measure", "--model", zoo_cs, tmp_path / "a.png", tmp_path / "y.npz")
    assert code == 2 and "lorun measure needs a PyTorch model" in err
    code, _, err = run(capsys, "eval", "--model", zoo_cs, "--mask", tmp_path / "m.npy")
    assert code == 2 and "--mask:" in err and "holds its mask" in err


def test_lorun_export_int8_calibrated_on_a_folder(capsys, tmp_path):
    operator, channels, algorithm, _ = TASKS["cs"]()
    folder = trained_like(operator, channels, algorithm, K=2).save_pretrained(tmp_path / "net")
    images = tmp_path / "train"
    images.mkdir()
    for i in range(3):
        png(images / f"{i}.png", 48, 40)
    code, out, err = run(capsys, "export", "--model", folder, tmp_path / "cs.onnx", "--image-size", 32, 32, "--int8", images)
    assert code == 0, err
    assert "int8, calibrated on 3 images" in out
    int8 = OnnxNetwork(tmp_path / "cs-int8.onnx")
    assert int8.metadata["precision"] == "int8 (static, calibrated on 3 images)" and int8.metadata["task"] == "cs"
    x = smooth(1, 64, 32)
    y = int8.operator.A(x)
    difference = (int8(y) - OnnxNetwork(tmp_path / "cs.onnx")(y)).abs()
    assert float(difference.mean()) < 0.01  # int8 is close, not equal: about 0.002 here; the max (one pixel) ranged 0.01-0.16 run to run


def test_int8_calibration_needs_images_of_the_file_size(capsys, tmp_path):
    operator, channels, algorithm, size = TASKS["sr"]()
    folder = trained_like(operator, channels, algorithm, K=2).save_pretrained(tmp_path / "net")
    images = tmp_path / "small"
    images.mkdir()
    png(images / "a.png", 16, 16)
    code, _, err = run(capsys, "export", "--model", folder, tmp_path / "sr.onnx", "--image-size", *size, "--int8", images)
    assert code == 2 and "no image there is large enough to calibrate on" in err


def test_the_numpy_onnxruntime_example_restores_as_the_network(tmp_path, capsys, monkeypatch):
    import runpy
    import sys
    from pathlib import Path

    from lorun_peft.cli.inputs import write_measurement

    example = Path(__file__).resolve().parents[1] / "examples" / "onnx_restore.py"
    readme = (example.parents[1] / "docs/guides/export.md").read_text().replace(f'--8<-- "examples/{example.name}"', example.read_text())
    assert example.read_text().split('"""\n\n', 1)[1] in readme  # the README shows this very script
    operator, channels, algorithm, _ = TASKS["cs"]()
    net = trained_like(operator, channels, algorithm, K=2)
    path = to_onnx(net, tmp_path / "cs.onnx", image_size=(32, 32)).path
    x = smooth(1, 64, 96)
    with torch.no_grad():
        y = operator.A(x)
        expected = net(y).clamp(0, 1)[0].numpy()
    write_measurement(tmp_path / "y.npz", y, operator)
    monkeypatch.setattr(sys, "argv", ["onnx_restore.py", str(path), str(tmp_path / "y.npz"), str(tmp_path / "x.npy")])
    runpy.run_path(str(example), run_name="__main__")
    assert "cs: measurement (1, 64, 4, 6) -> restored (1, 1, 64, 96)" in capsys.readouterr().out
    assert np.abs(np.load(tmp_path / "x.npy") - expected).max() <= 1e-4
    write_measurement(tmp_path / "other.npz", BlockCS(0.25, block=16, init="orthogonal", seed=5).A(x).detach(),
                      BlockCS(0.25, block=16, init="orthogonal", seed=5))
    monkeypatch.setattr(sys, "argv", ["onnx_restore.py", str(path), str(tmp_path / "other.npz"), str(tmp_path / "x.npy")])
    with pytest.raises(SystemExit, match="was measured with sampling sha256:"):
        runpy.run_path(str(example), run_name="__main__")


def test_the_numpy_onnxruntime_example_restores_a_colour_photograph(tmp_path, capsys, monkeypatch):
    """`lorun measure` of a colour image records its R, G, B measurements (colour_channels = 3);
    the numpy-only example gives back a 3 x H x W image equal to the network's per-channel restoration."""
    import runpy
    import sys
    from pathlib import Path

    from lorun_peft.cli.inputs import write_measurement

    example = Path(__file__).resolve().parents[1] / "examples" / "onnx_restore.py"
    operator, channels, algorithm, _ = TASKS["cs"]()
    net = trained_like(operator, channels, algorithm, K=2)
    path = to_onnx(net, tmp_path / "cs.onnx", image_size=(32, 32)).path
    x = torch.cat([smooth(1, 64, 96, seed=s) for s in range(3)])  # R, G, B as a gray batch
    with torch.no_grad():
        y = operator.A(x)
        expected = net(y).clamp(0, 1)[:, 0].numpy()
    write_measurement(tmp_path / "y.npz", y, operator, colour=True)
    monkeypatch.setattr(sys, "argv", ["onnx_restore.py", str(path), str(tmp_path / "y.npz"), str(tmp_path / "x.npy")])
    runpy.run_path(str(example), run_name="__main__")
    restored = np.load(tmp_path / "x.npy")
    assert restored.shape == (3, 64, 96) and np.abs(restored - expected).max() <= 1e-4
