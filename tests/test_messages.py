"""Messages a newcomer reads (issue #33, item 4): the options say what they mean, and the zoo's
table and figure say what x0 is."""

from __future__ import annotations

import argparse

import pytest
import torch

from lorun_peft import zoo
from lorun_peft.cli import demo
from lorun_peft.cli.parser import build_parser


def options(name: str) -> list[tuple[str, argparse.Action]]:
    """(command, action) for every subcommand that has the option ``name``."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return [(command, action) for command, p in sub.choices.items() for action in p._actions if name in action.option_strings]


def test_noise_sigma_says_what_the_noise_is_and_its_units():
    found = options("--noise-sigma")
    assert {command for command, _ in found} >= {"train", "eval", "restore", "measure", "plot"}
    for command, action in found:
        assert action.help and "Gaussian noise" in action.help and "[0, 1]" in action.help, command


def test_seed_says_what_it_fixes():
    found = options("--seed")
    assert {command for command, _ in found} >= {"train", "eval", "demo"}
    for command, action in found:
        assert action.help and "repeatable" in action.help and "noise" in action.help and "mask" in action.help, command


def test_the_zoo_bundles_x0_is_the_adjoint_and_is_said_so():
    """The zoo's CS bundles fit no Q: x0 = A^T y (a column of its own would repeat it) = Phi^T y."""
    names = [n for n in zoo.list() if n.startswith("cs-")]
    net = zoo.load(names[-1])
    x = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    for name in names:
        net.load_adapters(zoo.bundle_path(name))
        op = net.operator
        with torch.no_grad():
            y = op.A(x)
            assert torch.equal(op.initial_estimate(y), op.A_adjoint(y)), name
        assert demo.initial_estimate_words(op)[0] == "x0 = Phi^T y = A^T y", name


def test_the_zoo_tour_prints_no_repeated_column_and_titles_x0_truthfully(tmp_path, capsys, monkeypatch):
    drawn = {}
    monkeypatch.setattr(demo, "image_grid", lambda path, columns, labels, **options: drawn.update(labels=labels, **options))
    scores = demo.zoo_tour(torch.rand(1, 64, 64, generator=torch.Generator().manual_seed(0)), tmp_path)
    out = capsys.readouterr().out
    assert "A^T y dB" not in out and "linear dB" not in out and "x0 dB" in out
    assert "x0 = Phi^T y = A^T y (stage_0's input)" in out and out.count("stage_0's input") == 1
    assert set(scores["cs-0.25"]) == {"x0", "lorun"}
    assert drawn["labels"][1] == "x0 = Phi^T y = A^T y" and "learned" not in drawn["title"]
    assert "not trained" in drawn["title"] and drawn["inset"][2] == pytest.approx(0.22)
