"""The `lorun` command line: each command's happy path and its bad inputs (exit 2, one line, no traceback)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lorun_peft import zoo
from lorun_peft.cli import parser as cli
from lorun_peft.cli import commands
from lorun_peft.cli.parser import main
from lorun_peft.cli.commands import load_model
from lorun_peft.resolve import LEGACY_FILE
from lorun_peft.persistence.networks import NETWORK_CONFIG
from lorun_peft.errors import TrainingError
from lorun_peft.unfold import UnfoldedNetwork
from safetensors.torch import save_file

TINY = ["--K", "2", "--width", "4", "--depth", "1", "--patch", "16", "--steps", "2", "--batch-size", "2", "--no-progress"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def expect_error(capsys, match, *argv):
    code, out, err = run(capsys, *argv)
    assert code == 2, (out, err)
    assert match in err and "Traceback" not in err, err
    return err


@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    return folder


@pytest.fixture(scope="module")
def cs_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cs") / "run"
    assert main(["train", "--task", "cs", "--block", "8", "--out", str(out), *TINY]) == 0
    return out


def test_train_writes_a_model_that_rebuilds(cs_model):
    assert {p.name for p in cs_model.iterdir()} == {"model", "train_log.json", "checkpoints"}
    assert {p.name for p in (cs_model / "model").iterdir()} == {NETWORK_CONFIG, "README.md", "base", "bundle"}
    net, config = load_model(cs_model)
    assert net.share == "lora" and net.K == 2 and config["task"] == "cs"
    assert json.loads((cs_model / "model" / NETWORK_CONFIG).read_text())["share"] == "lora"
    again = UnfoldedNetwork.from_pretrained(cs_model / "model")  # the library reads what the command line wrote
    y = net.operator.A(torch.rand(1, 1, 16, 16))
    assert torch.equal(again(y), net(y))
    log = json.loads((cs_model / "train_log.json").read_text())
    assert len(log["denoiser"]["losses"]) == 2 and len(log["adapters"]["val_psnr"]) == 1


def test_rerun_resumes_from_checkpoints(cs_model, capsys):
    before = load_model(cs_model)[0].state_dict()
    code, out, _ = run(capsys, "train", "--task", "cs", "--block", "8", "--out", cs_model, *TINY)
    assert code == 0
    after = load_model(cs_model)[0].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_eval_table_csv_json(cs_model, images, tmp_path, capsys):
    csv_path, json_path = tmp_path / "r" / "t.csv", tmp_path / "t.json"
    code, out, _ = run(capsys, "eval", "--model", cs_model, "--data", images, "--csv", csv_path, "--json", json_path)
    assert code == 0
    assert "img0.png" in out and "mean" in out and "ssim" in out
    assert csv_path.read_text().splitlines()[0] == "image,x0_psnr,x0_ssim,psnr,ssim"
    assert len(json.loads(json_path.read_text())["images"]) == 3
    code, out, _ = run(capsys, "eval", "--model", cs_model / "model")  # built-in images, the network folder itself
    assert code == 0 and "synthetic_0" in out


def test_a_bundle_with_its_base_and_an_old_model_file(cs_model, tmp_path, capsys):
    model = cs_model / "model"
    code, out, _ = run(capsys, "eval", "--model", model / "bundle")  # base/ beside the bundle is found
    assert code == 0 and "synthetic_0" in out
    code, out, _ = run(capsys, "eval", "--model", model / "bundle", "--base", model / "base")
    assert code == 0
    lone = tmp_path / "lone"
    shutil.copytree(model / "bundle", lone)
    expect_error(capsys, "needs its base: give --base", "eval", "--model", lone)
    # the old single-file format loads with a note, and `lorun convert` rewrites it
    net = load_model(cs_model)[0]
    old = tmp_path / "old"
    old.mkdir()
    config = {"format": "lorun-model", "version": 1, "task": "cs", "channels": 1, "operator": net.operator.config(),
              "denoiser": {"name": "unet", "config": net.denoisers.model.config()},
              "unfold": {"K": 2, "algorithm": "pgd", "gamma": 10.0, "share": "lora", "adapter": "lora", "noise_level": True}}
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, old / LEGACY_FILE, metadata={"lorun": json.dumps(config)})
    code, _, err = run(capsys, "eval", "--model", old)
    assert code == 0 and "old single-file format" in err and "lorun convert" in err
    assert run(capsys, "convert", "--model", old, tmp_path / "new")[0] == 0
    y = net.operator.A(torch.rand(1, 1, 16, 16))
    assert torch.equal(UnfoldedNetwork.from_pretrained(tmp_path / "new")(y), net(y))


def test_restore_image(cs_model, images, tmp_path, capsys):
    output = tmp_path / "out" / "restored.png"
    code, out, _ = run(capsys, "restore", "--model", cs_model, images / "img1.png", output)
    assert code == 0 and "PSNR" in out
    assert Image.open(output).size == (32, 24)


def test_inspect_model_and_configuration(cs_model, capsys):
    code, out, _ = run(capsys, "inspect", "--model", cs_model)
    assert code == 0 and "rank" in out and "Block-2 equivalent" in out
    code, out, _ = run(capsys, "inspect", "--task", "sr", "--denoiser", "transformer", "--K", "9")
    assert code == 0 and "adapter stage_8" in out and "Block-9 equivalent" in out


def test_plot_writes_figures(cs_model, tmp_path, capsys):
    code, out, _ = run(capsys, "plot", "--model", cs_model, "--out", tmp_path / "figs")
    assert code == 0
    for name in ("stage_psnr.png", "lora_updates.png", "lora_norms.png"):
        assert Image.open(tmp_path / "figs" / name).size[0] > 100
    expect_error(capsys, "no adapted layer", "plot", "--model", cs_model, "--out", tmp_path / "f2", "--layers", "nope")


def test_sr_train_eval_and_measurement(tmp_path, images, capsys):
    out = tmp_path / "sr"
    code, _, _ = run(capsys, "train", "--task", "sr", "--scale", "2", "--kernel", "5", "--out", out, *TINY)
    assert code == 0
    code, text, _ = run(capsys, "eval", "--model", out, "--data", images)
    assert code == 0 and "Y channel, border 2" in text
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(tmp_path / "lr.png")
    code, _, _ = run(capsys, "restore", "--model", out, "--measurement", tmp_path / "lr.png", tmp_path / "sr.png")
    assert code == 0 and Image.open(tmp_path / "sr.png").size == (24, 20)


def test_cassi_train_eval_restore(tmp_path, capsys):
    out = tmp_path / "cassi"
    code, _, _ = run(capsys, "train", "--task", "cassi", "--bands", "4", "--out", out, *TINY)
    assert code == 0
    code, text, _ = run(capsys, "eval", "--model", out)
    assert code == 0 and "cube_0" in text
    np.save(tmp_path / "cube.npy", np.random.default_rng(0).random((20, 20, 4)).astype(np.float32))
    code, _, _ = run(capsys, "restore", "--model", out, tmp_path / "cube.npy", tmp_path / "cube_out.npy")
    assert code == 0 and np.load(tmp_path / "cube_out.npy").shape == (4, 16, 16)
    code, _, _ = run(capsys, "restore", "--model", out, tmp_path / "cube.npy", tmp_path / "cube.png")
    assert code == 0 and Image.open(tmp_path / "cube.png").mode == "RGB"
    np.save(tmp_path / "y.npy", np.zeros((16, 16 + 2 * 3), np.float32))
    code, _, _ = run(capsys, "restore", "--model", out, "--measurement", tmp_path / "y.npy", tmp_path / "x.npy")
    assert code == 0 and np.load(tmp_path / "x.npy").shape == (4, 16, 16)
    expect_error(capsys, "does not fit the model", "restore", "--model", out, "--measurement",
                 tmp_path / "cube.npy", tmp_path / "x2.npy")


def test_backbone_then_adapters(tmp_path, images, capsys):
    first, second = tmp_path / "b", tmp_path / "a"
    assert run(capsys, "train", "--phase", "backbone", "--block", "8", "--data", images, "--out", first, *TINY)[0] == 0
    assert load_model(first)[0].share == "base"
    code, _, _ = run(capsys, "train", "--phase", "adapters", "--init", first, "--gamma", "50", "--data", images,
                     "--val", images, "--out", second, *TINY)
    assert code == 0
    net, config = load_model(second)
    assert net.share == "lora" and config["unfold"]["gamma"] == 50.0
    expect_error(capsys, "needs either --init", "train", "--phase", "adapters", "--out", tmp_path / "c", *TINY)
    expect_error(capsys, "needs either --init", "train", "--phase", "adapters", "--init", first, "--base", "zoo",
                 "--out", tmp_path / "c", *TINY)
    expect_error(capsys, "--init is only for --phase adapters", "train", "--init", first, "--out", tmp_path / "c", *TINY)
    expect_error(capsys, "--base is only for --phase adapters", "train", "--base", "zoo", "--out", tmp_path / "c", *TINY)


def test_default_recipe_pretrains_the_denoiser_then_the_adapters(tmp_path, images, capsys):
    code, out, _ = run(capsys, "train", "--block", "8", "--data", images, "--out", tmp_path / "r", *TINY)
    assert code == 0, out
    assert "linear MMSE estimate" in out and "steps set for the pretrained denoiser" in out
    log = json.loads((tmp_path / "r" / "train_log.json").read_text())
    assert list(log) == ["denoiser", "adapters"]
    net, config = load_model(tmp_path / "r")
    assert net.share == "lora" and config["operator"]["linear_estimate"] is True
    assert json.loads((tmp_path / "r" / "checkpoints" / "settings.json").read_text())["training"]["phases"] == ["denoiser", "adapters"]
    code, out, _ = run(capsys, "train", "--phase", "paper", "--no-linear-estimate", "--block", "8", "--data", images,
                       "--out", tmp_path / "p", *TINY)
    assert code == 0 and list(json.loads((tmp_path / "p" / "train_log.json").read_text())) == ["backbone", "adapters"]
    assert load_model(tmp_path / "p")[1]["operator"]["linear_estimate"] is False


def test_train_in_bfloat16(tmp_path, images, capsys):
    code, _, _ = run(capsys, "train", "--block", "8", "--data", images, "--precision", "bf16", "--out", tmp_path / "b", *TINY)
    assert code == 0
    settings = json.loads((tmp_path / "b" / "checkpoints" / "settings.json").read_text())
    assert settings["training"]["precision"] == "bf16"
    assert all(p.dtype == torch.float32 for p in load_model(tmp_path / "b")[0].parameters())


def test_adapters_over_the_zoo_base_swap_into_the_zoo(tmp_path, capsys):
    images, out = tmp_path / "gray", tmp_path / "new-ratio"
    images.mkdir()
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (48, 48), dtype=np.uint8)).save(images / f"{i}.png")
    code, text, _ = run(capsys, "train", "--phase", "adapters", "--base", "zoo:cs", "--ratio", "0.3", "--no-learn-matrix",
                        "--data", images, "--K", "9", "--patch", "32", "--steps", "1", "--batch-size", "1", "--no-progress",
                        "--out", out)
    assert code == 0, text
    net, config = load_model(out)
    assert config["denoiser"]["config"] == zoo.load_base("cs").config()
    live = zoo.load("cs-0.25")
    live.load_adapters(out / "model" / "bundle")  # the base of the zoo's CS bundles: it swaps into their network
    assert live.operator.ratio == pytest.approx(0.3, abs=0.01)


def test_train_errors_leave_nothing_behind(tmp_path, images, capsys):
    out = tmp_path / "out"
    expect_error(capsys, "data folder not found", "train", "--data", tmp_path / "missing", "--out", out, *TINY)
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    expect_error(capsys, "broken.png", "train", "--data", images, "--out", out, *TINY)
    expect_error(capsys, "ratio", "train", "--ratio", "1.5", "--out", out, *TINY)
    expect_error(capsys, "multiple of --scale", "train", "--task", "sr", "--scale", "3", "--out", out, *TINY)
    expect_error(capsys, "--steps must be >= 1", "train", "--out", out, *TINY, "--steps", "0")
    expect_error(capsys, "--kernel must be in 0..11", "train", "--task", "sr", "--kernel", "12", "--out", out, *TINY)
    assert not (out / "model").exists()


def test_failed_training_writes_no_model(tmp_path, capsys, monkeypatch):
    def fail(*args, **kwargs):
        raise TrainingError("loss became nan at step 1")

    monkeypatch.setattr(commands, "train_two_phase", fail)
    expect_error(capsys, "loss became nan", "train", "--block", "8", "--out", tmp_path / "o", *TINY)
    assert not (tmp_path / "o" / "model").exists()


def test_model_and_input_errors(cs_model, tmp_path, capsys):
    expect_error(capsys, "model not found", "eval", "--model", tmp_path / "nothing")
    expect_error(capsys, "holds no saved network", "eval", "--model", tmp_path)
    (tmp_path / "fake.safetensors").write_bytes(b"12345678not a model")
    expect_error(capsys, "not a lorun model file", "eval", "--model", tmp_path / "fake.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, tmp_path / "plain.safetensors")  # a safetensors file of something else
    expect_error(capsys, "not a lorun model file", "eval", "--model", tmp_path / "plain.safetensors")
    save_file({"w": torch.zeros(2)}, tmp_path / "other.safetensors", metadata={"lorun": '{"format": "x"}'})
    expect_error(capsys, "expected 'lorun-model'", "eval", "--model", tmp_path / "other.safetensors")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    expect_error(capsys, "bad.png cannot be read", "restore", "--model", cs_model, tmp_path / "bad.png", tmp_path / "o.png")
    expect_error(capsys, "image file not found", "restore", "--model", cs_model, tmp_path / "none.png", tmp_path / "o.png")
    expect_error(capsys, "must end in .png or .npy", "restore", "--model", cs_model, tmp_path / "bad.png", tmp_path / "o.jpg")
    assert not (tmp_path / "o.png").exists()
    with pytest.raises(SystemExit) as exit_info:  # argparse's own errors also exit with 2
        main(["train", "--task", "teleport", "--out", str(tmp_path)])
    assert exit_info.value.code == 2


def test_demo_quick(tmp_path, capsys, images):  # images: 24 x 32, too small for part 2
    code, out, _ = run(capsys, "demo", "--steps", "2", "--K", "2", "--out", tmp_path / "demo", "--no-progress")
    assert code == 0
    assert "pretrained zoo" in out and all(f"cs-{r}" in out for r in ("0.01", "0.04", "0.10", "0.25", "0.50"))
    assert "a task the zoo's base has never seen: inpainting, 80% of the pixels missing at random" in out
    for method in ("x0: holes filled", "plug-and-play", "Block-1", "LoRun-2", "Block-2 equivalent"):
        assert method in out
    assert "test PSNR after 0, 1, 2 steps: x0 (holes filled)" in out and "; plug-and-play" in out
    for name in ("zoo.png", "demo.png", "training.png", "stages.png", "lora_updates.png", f"model/{NETWORK_CONFIG}"):
        assert (tmp_path / "demo" / name).is_file()
    assert not (tmp_path / "demo" / "checkpoints").exists()
    # the command the demo suggests measures its own test photographs: it gives the demo's number
    assert sorted(p.name for p in (tmp_path / "demo" / "test_images").iterdir()) == [
        "astronaut.png", "camera.png", "chelsea.png", "coffee.png"]
    printed = next(line.split()[1:3] for line in out.splitlines() if line.strip().startswith("LoRun-2 "))
    suggested = out.split("dB again: lorun ")[1].splitlines()[0].split()
    assert suggested == ["eval", "--model", str(tmp_path / "demo"), "--data", str(tmp_path / "demo" / "test_images")]
    code, evaluated, _ = run(capsys, *suggested)
    assert code == 0 and "camera.png" in evaluated
    assert next(line.split()[3:5] for line in evaluated.splitlines() if line.startswith("mean")) == printed
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(5):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 48), dtype=np.uint8)).save(photos / f"p{i}.png")
    code, out, _ = run(capsys, "demo", "--steps", "2", "--K", "2", "--data", photos, "--out", tmp_path / "d2", "--no-progress")
    assert code == 0 and "4 images of" in out and "(1 held out)" in out
    code, _, err = run(capsys, "demo", "--steps", "1", "--K", "2", "--data", images, "--out", tmp_path / "d3", "--no-progress")
    assert code == 2 and "part 2 needs images of at least 32 x 32 pixels" in err


def test_demo_part_2_refuses_a_share_of_missing_pixels_out_of_range(tmp_path, capsys):
    code, out, err = run(capsys, "demo", "--steps", "1", "--K", "2", "--missing", "1.5", "--out", tmp_path / "demo", "--no-progress")
    assert code == 2 and "missing must be the fraction of pixels removed, a number in [0, 1), got 1.5" in err
    assert "Part 1" not in out  # refused before any work


def test_console_script_reports_errors_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lorun_peft.cli", "eval", "--model", str(tmp_path / "x")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "lorun eval: error: model not found" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_train_with_data_validates_on_held_out_images_by_default(tmp_path, images, capsys):
    out = tmp_path / "run"
    code, text, _ = run(capsys, "train", "--block", "8", "--data", images, "--out", out, *TINY)
    assert code == 0
    assert "validating on 1 image(s) held out of" in text and "img2.png" in text
    assert text.count("validation PSNR") == 2  # one line per phase
    log = json.loads((out / "train_log.json").read_text())
    assert all(entry["val_psnr"] for entry in log.values())


def test_channels_follow_the_data(tmp_path, capsys):
    gray = tmp_path / "gray"
    gray.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (24, 32), dtype=np.uint8)).save(gray / f"g{i}.png")
    out = tmp_path / "sr_gray"
    assert run(capsys, "train", "--task", "sr", "--scale", "2", "--data", gray, "--out", out, *TINY)[0] == 0
    assert load_model(out)[1]["channels"] == 1  # gray images train a gray model
    rgb = tmp_path / "sr_rgb"
    assert run(capsys, "train", "--task", "sr", "--scale", "2", "--data", gray, "--channels", "3", "--out", rgb, *TINY)[0] == 0
    assert load_model(rgb)[1]["channels"] == 3  # unless --channels 3 is asked
    code, _, _ = run(capsys, "restore", "--model", rgb, gray / "g0.png", tmp_path / "restored.png")
    assert code == 0 and Image.open(tmp_path / "restored.png").mode == "L"  # a gray input comes back gray


def test_rerunning_train_resumes_only_with_the_recorded_settings(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train", "--block", "8", "--out", out, *TINY]
    assert run(capsys, *base)[0] == 0
    recorded = (out / "checkpoints" / "settings.json").read_text()
    code, _, err = run(capsys, *base, "--lr", "0.5", "--noise-sigma", "0.1")
    assert code == 2 and "training.lr: recorded 0.001, now 0.5" in err and "training.noise_sigma" in err and "--fresh" in err
    code, _, err = run(capsys, *base, "--ratio", "0.1")
    assert code == 2 and "operator.ratio: recorded 0.25, now 0.1" in err and "--fresh" in err
    assert (out / "checkpoints" / "settings.json").read_text() == recorded  # nothing false was recorded
    assert run(capsys, *base)[0] == 0  # the same settings resume
    assert run(capsys, *base, "--lr", "0.5", "--fresh")[0] == 0
    assert json.loads((out / "checkpoints" / "settings.json").read_text())["training"]["lr"] == 0.5


def test_checkpoints_without_recorded_settings_are_not_resumed(tmp_path, capsys):
    out = tmp_path / "run"
    (out / "checkpoints" / "backbone").mkdir(parents=True)
    (out / "checkpoints" / "backbone" / "checkpoint.pt").write_bytes(b"old")
    code, _, err = run(capsys, "train", "--block", "8", "--out", out, *TINY)
    assert code == 2 and "without recorded settings" in err and "--fresh" in err


def test_help_and_argument_errors_need_no_torch():
    """`lorun --help` and argument errors answer before torch (or PEFT, the Hub client) is imported."""
    code = (
        "import sys\n"
        "from lorun_peft.cli.parser import main\n"
        "for argv in (['--help'], ['train', '--steps', 'x'], ['eval']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = [m for m in ('torch', 'peft', 'huggingface_hub', 'accelerate', 'timm') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in proc.stdout, proc.stdout + proc.stderr


def test_import_lorun_peft_is_lazy():
    code = "import sys, lorun_peft\nprint([m for m in ('torch', 'peft', 'huggingface_hub', 'accelerate', 'timm') if m in sys.modules])"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_the_parser_names_every_denoiser():
    from lorun_peft.denoisers import DENOISERS

    assert cli.DENOISER_NAMES == tuple(sorted(DENOISERS))


def test_bundle_is_no_alias_of_model(capsys):
    """`--bundle` used to be an alias of `--model` that could not read a bundle folder."""
    with pytest.raises(SystemExit):
        main(["eval", "--bundle", "run/bundle"])
    err = capsys.readouterr().err
    assert "required: --model" in err or "unrecognized arguments: --bundle" in err


def test_phase_both_is_the_earlier_name_of_paper(capsys):
    parser = cli.build_parser()
    assert parser.parse_args(["train", "--phase", "both", "--out", "r"]).phase == "paper"
    assert parser.parse_args(["train", "--phase", "paper", "--out", "r"]).phase == "paper"
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--phase", "all", "--out", "r"])
    assert "invalid choice: 'all'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--help"])
    assert "'both'" in capsys.readouterr().out
