"""Nothing in the package can unpickle: every loader reads safetensors, JSON, images or numbers."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lorun_peft"


def sources() -> dict[str, str]:
    return {str(p.relative_to(PACKAGE)): p.read_text() for p in PACKAGE.rglob("*.py")}


def test_no_pickle_module():
    for name, text in sources().items():
        assert not re.search(r"^\s*(import|from)\s+(c?pickle|dill|joblib|marshal)\b", text, flags=re.M), name


def test_torch_load_only_with_weights_only():
    for name, text in sources().items():
        for call in re.finditer(r"torch\.load\(([^)]*)\)", text):
            assert "weights_only=True" in call.group(1), f"{name}: {call.group(0)}"


def test_numpy_load_never_allows_pickle():
    for name, text in sources().items():
        for call in re.finditer(r"np\.load\(([^)]*)\)", text):
            assert "allow_pickle=False" in call.group(1), f"{name}: {call.group(0)}"


def test_no_eval_or_exec():
    for name, text in sources().items():
        assert not re.search(r"(?<![\w.])(eval|exec)\(", text), name
