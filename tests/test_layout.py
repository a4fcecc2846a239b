"""The package's folders (issue #21): at most 20 entries at the top, and every module that moved
into a subpackage still imports from its old path for one release, with a FutureWarning that names
the new one."""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import lorun_peft

PACKAGE = Path(lorun_peft.__file__).resolve().parent


def test_at_most_20_entries_at_the_top():
    entries = sorted(p.name for p in PACKAGE.iterdir() if p.name != "__pycache__")
    assert len(entries) <= 20, entries
    assert {"unfold.py", "config.py", "adapters", "persistence", "training", "cli", "app"} <= set(entries)


@pytest.mark.parametrize("old", sorted(lorun_peft.MOVED))
def test_a_moved_module_imports_from_its_old_path_with_a_future_warning(old, monkeypatch):
    new = f"lorun_peft.{lorun_peft.MOVED[old]}"
    assert not (PACKAGE / f"{old}.py").exists()  # the finder only answers for paths with no file
    monkeypatch.delitem(sys.modules, f"lorun_peft.{old}", raising=False)
    with pytest.warns(FutureWarning, match=f"lorun_peft.{old} moved to {new}"):
        module = importlib.import_module(f"lorun_peft.{old}")
    assert module is importlib.import_module(new)


def test_names_import_from_an_old_path_and_the_train_function_stays(monkeypatch):
    from lorun_peft.training.recipe import PAPER, train_two_phase as moved

    monkeypatch.delitem(sys.modules, "lorun_peft.recipe", raising=False)
    monkeypatch.delitem(sys.modules, "lorun_peft.train", raising=False)
    with pytest.warns(FutureWarning, match="lorun_peft.training.recipe"):
        from lorun_peft.recipe import train_two_phase
    assert train_two_phase is moved is lorun_peft.train_two_phase
    with pytest.warns(FutureWarning, match="lorun_peft.training.loop"):
        from lorun_peft.train import fit_operator
    assert callable(fit_operator)
    assert callable(lorun_peft.train) and not isinstance(lorun_peft.train, type(sys))  # still the function
    monkeypatch.delitem(vars(lorun_peft), "recipe", raising=False)
    with pytest.warns(FutureWarning, match="lorun_peft.recipe moved"):
        assert lorun_peft.recipe.PAPER is PAPER  # attribute access, as the README used to show


def test_new_paths_import_without_warnings():
    code = ("import warnings; warnings.filterwarnings('error', message='lorun_peft')\n"
            "import lorun_peft, importlib\n"
            "for new in sorted(set(lorun_peft.MOVED.values())): importlib.import_module('lorun_peft.' + new)\n"
            "from lorun_peft import unfold, UnfoldConfig, zoo, train, evaluate, train_two_phase, load, list_bundles, gamma_rank\n"
            "import lorun_peft.operators, lorun_peft.denoisers, lorun_peft.errors, lorun_peft.metrics, lorun_peft.data\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_unknown_names_still_raise():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("lorun_peft.no_such_module")
    with pytest.raises(AttributeError):
        lorun_peft.no_such_name  # noqa: B018
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert lorun_peft.operators.BlockCS  # not moved: no warning


def test_walking_the_package_sets_off_no_future_warning():
    """What doctest collection does (pytest reads every name of dir(); doctest's finder walks each
    module but the __main__ ones, which pytest skips too) and ``from lorun_peft import *`` touch no
    moved module (a fresh interpreter: no moved module imported yet)."""
    code = ("import doctest, importlib, pkgutil, warnings\n"
            "warnings.simplefilter('error', FutureWarning)\n"
            "import lorun_peft\n"
            "for name in dir(lorun_peft): getattr(lorun_peft, name)\n"
            "exec('from lorun_peft import *', {})\n"
            "finder = doctest.DocTestFinder()\n"
            "for info in pkgutil.walk_packages(lorun_peft.__path__, 'lorun_peft.'):\n"
            "    if not info.name.endswith('__main__'): finder.find(importlib.import_module(info.name))\n"
            "finder.find(lorun_peft)\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_collecting_the_package_doctests_warns_of_no_moved_module():
    proc = subprocess.run([sys.executable, "-m", "pytest", "-o", "addopts=", "-p", "no:xdist", "-p", "no:cacheprovider", "-q",
                           "--co", "-rw", "--doctest-modules", str(PACKAGE / "__init__.py")],
                          capture_output=True, text=True, timeout=300, cwd=PACKAGE.parent, check=False)
    assert proc.returncode == 0 and "lorun_peft/__init__.py::lorun_peft" in proc.stdout, proc.stdout + proc.stderr
    assert "FutureWarning" not in proc.stdout + proc.stderr, proc.stdout
