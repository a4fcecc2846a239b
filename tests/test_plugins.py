"""A task from another installed package works through every command with no edit to lorun_peft.

The plugin is a real distribution: a package and its ``.dist-info`` (METADATA and
``entry_points.txt`` in the ``lorun_peft.tasks`` group) on ``sys.path``, which is what
``pip install`` leaves behind; ``importlib.metadata`` finds it as it finds any installed package.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lorun_peft.tasks import plugins
from lorun_peft.cli.parser import main
from lorun_peft.operators.base import OPERATORS
from lorun_peft.tasks import TASKS, task_named

PLUGIN = '''
"""A toy task: every pixel dimmed by a known gain (y = gain * x)."""
from lorun_peft.operators import LinearOperator, register_operator
from lorun_peft.tasks import Option, Task


@register_operator
class Dim(LinearOperator):
    def __init__(self, gain=0.5, channels=None):
        super().__init__()
        self.gain, self.channels = float(gain), channels

    def A(self, x):
        return self.gain * x

    def A_adjoint(self, y):
        return self.gain * y

    def prox_l2(self, z, y, gamma):
        return (z + gamma * self.gain * y) / (1 + gamma * self.gain ** 2)

    def _config_args(self):
        return {"gain": self.gain, "channels": self.channels}


class DimTask(Task):
    name = "dim"
    summary = "an image dimmed by a known gain"
    operator_types = ("Dim",)
    options = (Option("--gain", "the gain (default 0.5)", type=float, default=0.5),)

    def make_operator(self, args, channels):
        return Dim(args.gain, channels=channels)
'''


def install(root: Path, name: str, entry: str, source: str) -> Path:
    """A distribution ``name`` with module ``name`` and one ``lorun_peft.tasks`` entry point, under ``root``."""
    (root / f"{name}.py").write_text(textwrap.dedent(source))
    info = root / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[lorun_peft.tasks]\n{entry} = {name}:DimTask\n")
    return root


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """The toy plugin installed on sys.path; the registries are put back as they were afterwards."""
    (tmp_path / "site").mkdir()
    root = install(tmp_path / "site", "lorun_dim_task", "dim", PLUGIN)
    monkeypatch.syspath_prepend(str(root))
    tasks, operators = dict(TASKS), dict(OPERATORS)
    plugins.reset_plugins()
    yield root
    TASKS.clear(), TASKS.update(tasks)
    OPERATORS.clear(), OPERATORS.update(operators)
    sys.modules.pop("lorun_dim_task", None)
    plugins.reset_plugins()


def lorun(capsys, *argv) -> str:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    return out


def test_a_plugin_task_runs_through_every_command(plugin, tmp_path, capsys):
    assert task_named("dim").summary == "an image dimmed by a known gain"
    run = tmp_path / "run"
    lorun(capsys, "train", "--task", "dim", "--gain", "0.3", "--phase", "backbone", "--steps", "2", "--batch-size", "2",
          "--patch", "16", "--K", "2", "--width", "4", "--depth", "1", "--no-progress", "--out", run)
    assert "task dim" in lorun(capsys, "inspect", "--model", run)
    assert "dim model" in lorun(capsys, "eval", "--model", run)
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 24), dtype=np.uint8)).save(image)
    assert "PSNR" in lorun(capsys, "restore", "--model", run, image, tmp_path / "out.png")
    lorun(capsys, "measure", "--model", run, image, tmp_path / "y.npz")
    y = np.load(tmp_path / "y.npz")["y"]
    assert np.allclose(y[0, 0], 0.3 * np.asarray(Image.open(image), dtype=np.float32) / 255, atol=1e-6)
    lorun(capsys, "restore", "--model", run, "--measurement", tmp_path / "y.npz", tmp_path / "from_y.png")
    assert Image.open(tmp_path / "from_y.png").size == (24, 20)
    pytest.importorskip("onnxruntime")
    assert "max abs difference" in lorun(capsys, "export", "--model", run, tmp_path / "dim.onnx", "--image-size", "16", "16")


def test_the_app_restores_with_a_plugin_task(plugin, tmp_path):
    import torch

    import lorun_peft
    from lorun_peft.app.playground import Playground

    dim = sys.modules["lorun_dim_task"] if "lorun_dim_task" in sys.modules else __import__("lorun_dim_task")
    from lorun_peft.denoisers import UNet

    net = lorun_peft.unfold(UNet(in_channels=1, width=4, depth=1), dim.Dim(0.5), K=2, share="base")
    folder = net.save_pretrained(tmp_path / "dim-net")
    play = Playground(allow_local=True)
    play.select(str(folder))
    result = play.restore(torch.rand(1, 32, 32))
    assert result.metrics["restored PSNR (dB)"] > 0


def test_a_broken_plugin_is_named_and_the_rest_still_works(tmp_path):
    """A plugin whose module fails to import: `lorun --help` and the built-in tasks work, and asking
    for the plugin's task names the plugin and its error."""
    root = tmp_path / "site"
    root.mkdir()
    install(root, "lorun_broken_task", "broken", "raise ImportError('no module named shiny_dependency')\n")
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    code = ("from lorun_peft.tasks import task_named, task_names\n"
            "print(task_names())\n"
            "try:\n    task_named('broken')\nexcept Exception as err:\n    print(type(err).__name__, err)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "['cassi', 'cs', 'deblur', 'deepinv', 'inpaint', 'sr']" in proc.stdout, proc.stderr
    assert ("InvalidArgumentError plugin 'broken' (lorun_broken_task:DimTask) failed to load: "
            "ImportError: no module named shiny_dependency") in proc.stdout
    helped = subprocess.run([sys.executable, "-m", "lorun_peft.cli", "--help"], capture_output=True, text=True, env=env, timeout=120)
    assert helped.returncode == 0 and "train" in helped.stdout
    assert "plugin 'broken'" in helped.stderr  # said once, on stderr


def test_a_task_name_is_taken_once():
    from lorun_peft.errors import InvalidArgumentError
    from lorun_peft.tasks import Task, register_task

    class Impostor(Task):
        name = "cs"

    with pytest.raises(InvalidArgumentError, match="task 'cs' is already registered by lorun_peft.tasks.cs"):
        register_task(Impostor)


def test_a_network_of_a_task_not_installed_says_what_to_do(tmp_path):
    """A saved network whose operator belongs to a task package that is not installed."""
    import json

    from lorun_peft import UnfoldedNetwork, unfold
    from lorun_peft.denoisers import UNet
    from lorun_peft.errors import IncompatibleBundleError
    from lorun_peft.operators import BlockCS

    folder = unfold(UNet(in_channels=1, width=4, depth=1), BlockCS(0.25, block=8), K=2, share="base").save_pretrained(tmp_path / "n")
    config_file = folder / "unfold_config.json"
    config = json.loads(config_file.read_text())
    config["operator"]["type"] = "Dim"
    config_file.write_text(json.dumps(config))
    with pytest.raises(IncompatibleBundleError, match=r"its operator 'Dim' cannot be rebuilt here: operator config names "
                                                      r"unknown type 'Dim'; known: \[.*\] \(an operator of a task package "
                                                      r"registers when the package is installed: pip install it\)"):
        UnfoldedNetwork.from_pretrained(folder)
