"""Third-party tasks, found through the Python entry-point group ``lorun_peft.tasks``.

A package that adds a task declares it in its own ``pyproject.toml``::

    [project.entry-points."lorun_peft.tasks"]
    blur3 = "my_package.blur3:Blur3Task"

and, once installed, its task works through every ``lorun`` command and the app with no edit to
lorun_peft. The entry points are loaded (their modules imported) when :mod:`lorun_peft.tasks` is
first imported, which loading a saved network does (so a plugin's operator is registered before
a saved one is rebuilt). A plugin that fails to import is reported by name and skipped: the other
tasks and ``lorun --help`` still work.

>>> load_plugins() is load_plugins()  # found once per process
True
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable

__all__ = ["GROUP", "PluginFailure", "load_plugins", "plugin_failures", "on_plugin"]

GROUP = "lorun_peft.tasks"


@dataclass(frozen=True)
class PluginFailure:
    """An entry point that could not be loaded: its name, its target and why."""

    name: str
    target: str
    error: str

    def __str__(self) -> str:
        return f"plugin {self.name!r} ({self.target}) failed to load: {self.error}"


_LOADED: dict[str, Any] | None = None
_FAILURES: list[PluginFailure] = []
_HANDLERS: list[Callable[[str, Any], None]] = []


def on_plugin(handler: Callable[[str, Any], None]) -> None:
    """Have ``handler(name, loaded_object)`` called for every plugin, now and later (the task registry
    registers plugin tasks this way)."""
    _HANDLERS.append(handler)
    for name, obj in (_LOADED or {}).items():
        handler(name, obj)


def load_plugins() -> dict[str, Any]:
    """Load every ``lorun_peft.tasks`` entry point once; returns {name: loaded object}. Failures are
    kept (:func:`plugin_failures`), never raised."""
    global _LOADED
    if _LOADED is not None:
        return _LOADED
    _LOADED = {}
    for point in metadata.entry_points(group=GROUP):
        try:
            obj = point.load()
            for handler in _HANDLERS:
                handler(point.name, obj)
        except Exception as err:  # noqa: BLE001 - a broken plugin must not break the others
            _FAILURES.append(PluginFailure(point.name, point.value, f"{type(err).__name__}: {err}"))
            continue
        _LOADED[point.name] = obj
    return _LOADED


def plugin_failures() -> list[PluginFailure]:
    """The plugins that failed to load (after :func:`load_plugins`)."""
    load_plugins()
    return list(_FAILURES)


def reset_plugins() -> None:
    """Forget what was loaded, so the next :func:`load_plugins` looks again (tests install plugins)."""
    global _LOADED
    _LOADED = None
    _FAILURES.clear()
