"""The documentation: the site builds with `mkdocs build --strict` (no broken link, no missing page or
snippet, every API page's docstrings readable), every page the nav names exists, and the README
stays short and keeps its two commands. No network: the site's build reads only this repository."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
TOOLS = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")


def nav_pages(nav) -> list[str]:
    """Every page path the nav names, depth first."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in nav_pages(item)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    return []


def load_config() -> dict:
    """mkdocs.yml as data; its tags (``!relative``) read as None."""

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    return yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=Loader)


def test_every_page_in_the_nav_exists():
    pages = nav_pages(load_config()["nav"])
    assert len(pages) >= 20
    missing = [page for page in pages if not (DOCS / page).is_file()]
    assert not missing, f"mkdocs.yml's nav names pages that are not in docs/: {missing}"


def test_every_example_has_a_page_that_includes_it():
    pages = {p.read_text() for p in (DOCS / "examples").glob("*.md")}
    for script in sorted((ROOT / "examples").glob("*.py")):
        assert any(f'--8<-- "examples/{script.name}"' in text for text in pages), f"no docs page includes {script}"


def test_the_readme_is_short_and_keeps_its_two_commands():
    text = README.read_text()
    assert len(text.splitlines()) <= 150
    commands = [line for line in text.splitlines() if line.startswith("python3 -m venv .venv")]
    assert len(commands) == 2
    main_job, tests = commands
    assert main_job.endswith("pip install -e . && lorun demo")
    assert tests.endswith('pip install -e ".[test]" && python -m pytest')
    links = re.findall(r"\]\((docs/[^)#]+)", text)
    assert links and all((ROOT / link).is_file() for link in links), links


@pytest.mark.skipif(not all(importlib.util.find_spec(name.split(".")[0]) and importlib.util.find_spec(name) for name in TOOLS),
                    reason='mkdocs, mkdocs-material or mkdocstrings[python] is not installed: pip install -e ".[docs]"')
def test_the_site_builds_strictly(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    site = tmp_path / "site"
    assert (site / "index.html").is_file() and (site / "reference" / "unfold" / "index.html").is_file()
    assert (site / "figures" / "zoo_cs.png").is_file()  # the benchmark figures, served by docs/_hooks/figures.py
    quickstart = (site / "examples" / "quickstart" / "index.html").read_text()
    assert "synthetic_images" in quickstart  # the snippet was included, not left as a --8<-- line
    assert "--8&lt;--" not in quickstart
