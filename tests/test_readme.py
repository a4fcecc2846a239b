"""The README's quickstart runs, and examples/quickstart.py is the same code."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quickstart() -> str:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    return next(b for b in blocks if "lorun_peft.unfold" in b)


def test_readme_quickstart_runs(capsys):
    exec(compile(quickstart(), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "Block-9 equivalent" in out and "rank" in out


def test_example_matches_readme():
    assert quickstart() in (ROOT / "examples" / "quickstart.py").read_text()
