"""``lorun app``: the web page (:mod:`.page`, Gradio, imported only when built) over its engine
(:mod:`.playground`, no web code)."""

from __future__ import annotations

from .page import build, serve

__all__ = ["build", "serve"]
