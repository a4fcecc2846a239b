"""The task protocol: everything a task needs beyond its operator's ``A``, ``A_adjoint`` and
``prox_l2``, in one class, and the registry the command line, export, resolve and the app ask.

A task says

- its command-line options (:attr:`Task.options`) and how they build its operator
  (:meth:`Task.make_operator`);
- which operators it restores (:attr:`Task.operator_types`, class names) and the channels of the
  images they restore (:meth:`Task.channels`);
- which image sizes it accepts (:meth:`Task.fit_image` crops an image to one, or says why not);
- how a measurement is simulated from a clean image, and with which noise (:meth:`Task.simulate`);
- how a measurement file is read and written, with its fingerprint (:meth:`Task.measurement_record`,
  :meth:`Task.check_record`, :meth:`Task.measurement_size`);
- what a restored image is scored on (:meth:`Task.metric_options`);
- how it exports to ONNX (:meth:`Task.export_size`, :meth:`Task.dynamic_axes`,
  :meth:`Task.export_metadata`);
- how the app shows it (:attr:`Task.measurement_is_image`, :attr:`Task.summary`).

Every method has a default that fits an operator whose measurement is an image-shaped tensor, so a
new task overrides only what differs. A task module must not import torch at import time (``lorun
--help`` lists the tasks without it): import operators inside the methods.

>>> task_named("cs").name, task_named("sr").options[0].flag
('cs', '--scale')
>>> task_named("teleport")
Traceback (most recent call last):
...
lorun_peft.errors.InvalidArgumentError: unknown task 'teleport'; known: cassi, cs, deblur, deepinv, inpaint, sr
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

from ..errors import InvalidArgumentError
from .plugins import load_plugins, on_plugin, plugin_failures

if TYPE_CHECKING:  # pragma: no cover
    import argparse

    import torch

__all__ = ["Option", "Task", "TASKS", "register_task", "registered_tasks", "task_named", "task_of", "task_names"]


@dataclass(frozen=True)
class Option:
    """One command-line option of a task (``argparse.add_argument``'s arguments, torch-free).
    Tasks that share a flag share the option: give it the same ``type`` and ``default``."""

    flag: str
    help: str
    type: Any = None
    default: Any = None
    choices: Sequence[Any] | None = None
    action: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    def add_to(self, group: Any, tasks: Sequence[str], help: str | None = None) -> None:  # noqa: A002
        """Add the option to an argparse group, its help prefixed by the tasks that use it."""
        kwargs: dict[str, Any] = {"help": help or f"{', '.join(tasks)}: {self.help}", "default": self.default, **self.extra}
        if self.action is not None:
            kwargs["action"] = self.action
        else:
            kwargs["type"] = self.type
        if self.choices is not None:
            kwargs["choices"] = self.choices
        group.add_argument(self.flag, **kwargs)


class Task:
    """One restoration task. Subclass it, set :attr:`name` and override what differs; register an
    instance with :func:`register_task` (or through the ``lorun_peft.tasks`` entry-point group)."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    operator_types: ClassVar[tuple[str, ...]] = ()
    options: ClassVar[tuple[Option, ...]] = ()
    default_channels: ClassVar[int] = 1
    # whether an image file can be a measurement (the app's "treat it as the measurement" mode)
    measurement_is_image: ClassVar[bool] = True
    # whether `lorun measure` simulates this task's measurements into a file
    simulates_files: ClassVar[bool] = True
    # how built-in images are named (synthetic_0, ...)
    builtin_name: ClassVar[str] = "synthetic"
    # how a gray network restores a colour image (lorun_peft.data.colour): "channels" (R, G and B
    # each measured and restored), "luma" (Y by the network, chroma by the operator's estimate: SR)
    # or "none" (the channels are not colours: CASSI's bands)
    colour: ClassVar[str] = "channels"
    # how lorun_peft.export.tiles may restore a large image tile by tile: None (not tested: restored
    # whole), "stages" (the data steps whole, each stage's denoiser on tiles) or "measurement" (also
    # a whole network on tiles cut from the measurement: exact where the operator is local, block CS)
    tiles: ClassVar[str | None] = None

    # ---- which operators ----------------------------------------------------------------
    def handles(self, operator: Any) -> bool:
        """Whether this task restores ``operator``'s measurements: its class is the registered
        operator of one of :attr:`operator_types` (a name alone would also match another library's
        class of that name)."""
        from ..operators.base import OPERATORS

        return any(OPERATORS.get(name) is type(operator) for name in self.operator_types)

    def make_operator(self, args: "argparse.Namespace", channels: int) -> Any:
        """The operator the command-line options describe."""
        raise InvalidArgumentError(f"task {self.name} cannot be built from the command line; build its operator in Python")

    def channels_from_args(self, args: "argparse.Namespace") -> int | None:
        """The channels the command-line options fix (None: ``--channels`` or the data decide)."""
        return None

    def channels(self, operator: Any, denoiser_channels: int = 1) -> int:
        """The channels of the images restored (the operator's ``channels``, else the denoiser's)."""
        return getattr(operator, "channels", None) or denoiser_channels

    def sized_for_probe(self, operator: Any, size: tuple[int, int]) -> Any:
        """A context in which ``operator`` measures a probe image of ``size`` (for calibrations such
        as the tiles' margin), restored as it was after: :func:`~lorun_peft.operators.base.fit_operator`."""
        from ..operators.base import fit_operator

        return fit_operator(operator, size)

    def use_mask(self, operator: Any, path: Any) -> None:
        """``--mask FILE`` of restore, eval and export."""
        raise InvalidArgumentError(f"--mask is not an option of task {self.name}")

    # ---- images -------------------------------------------------------------------------
    def fit_image(self, operator: Any, x: "torch.Tensor") -> "torch.Tensor":
        """``x`` (C x H x W) cropped to a size the operator measures (raise InvalidArgumentError if none)."""
        return x

    def training_patch(self, operator: Any, patch: int) -> int:
        """The side of the training patches, given ``--patch``."""
        return patch

    def file_suffixes(self, source: Any) -> tuple[str, ...]:
        """The file suffixes of a data folder (or file list) this task reads images from."""
        from ..data.images import IMAGE_SUFFIXES

        return IMAGE_SUFFIXES

    def image_set(self, source: Any, channels: int | None, *, patch_size: int | None = None, seed: int = 0) -> Any:
        """A dataset (``len``, ``.full(i)``, ``.names``) of a folder's or file list's images: random
        patches of ``patch_size`` for training, or whole images (``patch_size=None``)."""
        from ..data.images import ImageFolder

        if patch_size is None:
            return ImageFolder(source, channels=channels, augment=False)
        return ImageFolder(source, patch_size=patch_size, channels=channels)

    def builtin_images(self, operator: Any, channels: int, n: int, size: int, seed: int, training: bool = False) -> Any:
        """``n`` built-in images of ``size`` x ``size`` (a tensor or dataset) to train or evaluate on
        when no folder is given."""
        from ..data.images import synthetic_images

        return synthetic_images(n, size, seed=seed, channels=channels)

    def load_input(self, path: Any, channels: int) -> "torch.Tensor":
        """A clean image file (C x H x W) to degrade and restore."""
        from ..data.images import load_image

        return load_image(path, channels)

    def simulate(self, operator: Any, x: "torch.Tensor", noise_sigma: float = 0.0,
                 generator: "torch.Generator | None" = None) -> "torch.Tensor":
        """A measurement of the images ``x``: ``A x`` plus Gaussian noise of ``noise_sigma``."""
        import torch

        y = operator.A(x)
        if noise_sigma:
            y = y + noise_sigma * torch.randn(y.shape, generator=generator, dtype=y.dtype).to(y.device)
        return y

    def metric_options(self, operator: Any) -> dict[str, Any]:
        """How a restoration is scored: ``y_channel`` (RGB on its luma) and ``border`` (pixels shaved)."""
        return {"y_channel": False, "border": 0}

    # ---- measurement files --------------------------------------------------------------
    def measurement_record(self, operator: Any) -> dict[str, Any]:
        """Arrays written beside ``y`` in a measurement .npz (a fingerprint of the operator)."""
        return {}

    def check_record(self, path: Any, contents: dict[str, Any], operator: Any) -> Any:
        """``y`` of a measurement .npz, checked against what :meth:`measurement_record` wrote."""
        return contents["y"]

    def measurement_size(self, operator: Any, y: "torch.Tensor") -> tuple[int, int] | None:
        """The image size a measurement ``y`` restores to, where the operator must be sized to it."""
        return None

    def describe(self, operator: Any) -> list[str]:
        """Lines ``lorun inspect`` prints about the operator beyond its configuration."""
        return []

    # ---- export -------------------------------------------------------------------------
    def size_multiple(self, operator: Any) -> tuple[int, str]:
        """What image sides must be multiples of, and its name (block CS: its block, SR: its scale)."""
        return 1, ""

    def export_size(self, operator: Any, image_size: Sequence[int] | None) -> tuple[int, int] | None:
        """The image size an exported file is checked at (None: the exporter's default), checked
        against :meth:`size_multiple`."""
        if image_size is None:
            return None
        height, width = int(image_size[0]), int(image_size[1])
        multiple, what = self.size_multiple(operator)
        if height % multiple or width % multiple:
            raise InvalidArgumentError(f"image_size must be multiples of the operator's {what} {multiple}, got {height} x {width}")
        return height, width

    def dynamic_axes(self, operator: Any, simulate: bool) -> tuple[str, str] | None:
        """Names of the measurement's dynamic height and width in an exported file (None: fixed)."""
        return None

    def export_metadata(self, operator: Any, simulate: bool) -> dict[str, str]:
        """Entries of the ONNX file's metadata beyond the common ones."""
        return {}

    def __repr__(self) -> str:
        return f"<task {self.name}: {self.summary}>"


TASKS: dict[str, Task] = {}


def register_task(task: Task | type[Task]) -> Task | type[Task]:
    """Register a task (an instance, or a class, instantiated without arguments); usable as a class
    decorator. Names must be new."""
    instance = task() if isinstance(task, type) else task
    if not isinstance(instance, Task) or not instance.name:
        raise InvalidArgumentError(f"a task must be a lorun_peft.tasks.Task with a name, got {task!r}")
    if TASKS.get(instance.name, instance).__class__ is not instance.__class__:
        raise InvalidArgumentError(f"task {instance.name!r} is already registered by {type(TASKS[instance.name]).__module__}")
    TASKS[instance.name] = instance
    return task


def _register_plugin(name: str, obj: Any) -> None:
    if not (isinstance(obj, Task) or (isinstance(obj, type) and issubclass(obj, Task))):
        raise InvalidArgumentError(f"entry point {name!r} must name a lorun_peft.tasks.Task subclass or instance, got {obj!r}")
    register_task(obj)


on_plugin(_register_plugin)


def task_names() -> list[str]:
    """Every registered task's name, plugins included, sorted."""
    load_plugins()
    return sorted(TASKS)


def registered_tasks() -> list[str]:
    """Every registered task's name, plugins included, in the order they were registered."""
    load_plugins()
    return list(TASKS)


def task_named(name: str) -> Task:
    """The task called ``name``; an unknown name, or a plugin that failed to load, is an error
    that says which."""
    if name not in TASKS:
        load_plugins()
    if name in TASKS:
        return TASKS[name]
    failed = [f for f in plugin_failures() if f.name == name]
    if failed:
        raise InvalidArgumentError(str(failed[0]))
    raise InvalidArgumentError(f"unknown task {name!r}; known: {', '.join(task_names())}")


def task_of(operator: Any) -> Task:
    """The task that restores ``operator``'s measurements: the first registered task that handles
    it, else the generic one (the defaults of :class:`Task`)."""
    load_plugins()
    for task in TASKS.values():
        if task.handles(operator):
            return task
    return GENERIC


class GenericTask(Task):
    """An operator no task claims: every default of the protocol."""

    name = "custom"
    summary = "an operator of your own (A, A_adjoint, prox_l2)"


GENERIC = GenericTask()


def json_entry(value: Any) -> str:
    """A metadata value as ONNX metadata stores it (a string)."""
    return value if isinstance(value, str) else json.dumps(value)
