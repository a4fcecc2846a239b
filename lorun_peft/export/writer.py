"""Write an unfolded network as one ONNX file that onnxruntime runs without PyTorch or PEFT.

:func:`to_onnx` merges the adapters (W0 + delta_k per stage, as ``merge_and_unload``), puts all K
stages with the operator inside (sampling matrix, kernel or mask as initializers), writes the file
with ``torch.onnx.export(dynamo=True)``, runs it at once on onnxruntime and compares it with
PyTorch (Optimum's convention: the max abs difference against ``atol``, an error past it, and the
file only lands when it passes). The file's metadata says what it restores (see
:mod:`lorun_peft.export.metadata`).

>>> import tempfile, pathlib
>>> from lorun_peft import unfold
>>> from lorun_peft.denoisers import UNet
>>> from lorun_peft.operators import BlockCS
>>> net = unfold(UNet(in_channels=1, width=4, depth=1), BlockCS(0.25, block=8), K=2)
>>> report = to_onnx(net, pathlib.Path(tempfile.mkdtemp()) / "cs.onnx", image_size=(16, 16))
>>> report.input_shape, report.max_abs_diff <= report.atol
(['batch', 16, 'rows', 'cols'], True)
"""

from __future__ import annotations

import contextlib
import copy
import gc
import logging
import os
import re
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ExportError, InvalidArgumentError, check_int, check_number
from ..persistence.atomic import atomic_write
from ..tasks import task_of
from ..unfold import UnfoldedNetwork
from .metadata import IMAGE, MEASUREMENT, file_metadata, input_channels

__all__ = ["to_onnx", "ExportReport", "ExportGraph", "DEFAULT_SIZE", "session"]

DEFAULT_SIZE = (256, 256)  # the sample image (and, where the size cannot stay dynamic, the size)


@dataclass
class ExportReport:
    """What :func:`to_onnx` wrote and how closely onnxruntime reproduces PyTorch on a sample."""

    path: Path
    input_name: str
    input_shape: list[int | str]
    image_size: tuple[int, int]  # of the sample checked on: the file's own size where it is fixed
    max_abs_diff: float
    atol: float
    seconds: float
    size_bytes: int

    def __str__(self) -> str:
        return (f"wrote {self.path} ({self.size_bytes / 2**20:.1f} MiB, input {self.input_name} {self.input_shape}) in "
                f"{self.seconds:.0f} s; onnxruntime against PyTorch: max abs difference {self.max_abs_diff:.2e} (atol {self.atol:g})")


class ExportGraph(nn.Module):
    """What the ONNX file computes: measurement (or, with ``simulate``, a clean image measured by
    the operator first) -> the restored image and every stage's output, clamped to [0, 1]."""

    def __init__(self, net: UnfoldedNetwork, simulate: bool = False) -> None:
        super().__init__()
        self.net, self.simulate = net, simulate

    def forward(self, data: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = self.net.operator.A(data) if self.simulate else data
        x, stages = self.net(y, return_stages=True)
        outputs = (x.clamp(0, 1), torch.stack(stages, dim=1).clamp(0, 1))
        return (*outputs, y) if self.simulate else outputs


def plain_network(net: UnfoldedNetwork) -> UnfoldedNetwork:
    """A float32 CPU copy of ``net`` in eval mode with no PEFT module: LoRun merged to Block-K."""
    if getattr(net, "share", None) == "lora" and getattr(net.denoisers, "can_merge", False):
        plain = net.merge_and_unload()
    else:
        plain = copy.deepcopy(net)
    plain = plain.float().cpu().eval()
    for p in plain.parameters():
        p.requires_grad_(False)
    return plain


def export_size(operator: Any, image_size: Sequence[int] | None) -> tuple[int, int]:
    """The sample image's size: checked against what the operator can measure (the task's
    :meth:`~lorun_peft.tasks.Task.export_size`)."""
    if image_size is not None and (isinstance(image_size, (str, bytes)) or len(image_size) != 2):
        raise InvalidArgumentError(f"image_size must be (height, width), got {image_size!r}")
    if image_size is not None:
        image_size = tuple(check_int(v, "image_size") for v in image_size)
    return task_of(operator).export_size(operator, image_size) or DEFAULT_SIZE


def dynamic_shapes(operator: Any, simulate: bool) -> dict[str, dict[int, Any]]:
    """The batch is always dynamic; the height and width where the task keeps them so (block CS:
    any multiple of the block)."""
    from torch.export import Dim

    shapes = {0: Dim("batch", min=1, max=1024)}
    axes = task_of(operator).dynamic_axes(operator, simulate)
    if axes is not None:
        shapes.update({2: Dim(axes[0], min=1, max=1024), 3: Dim(axes[1], min=1, max=1024)})
    return {"data": shapes}


def unsupported_op(error: BaseException) -> str | None:
    """What in the graph an exporter's error blames: the ATen op with no ONNX conversion
    (``aten.convolution.default``), or the line of code that branches on a tensor's values."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__, chain=True))
    call = re.search(r'The following call raised this error:\s*File "([^"]+)", line (\d+), in \w+\s*\n\s*(.+)', text)
    if call:
        where = call.group(1).split("site-packages/")[-1]
        return f"the code at {where}:{call.group(2)} ({call.group(3).strip()}) depends on tensor values, which an ONNX graph cannot"
    found = re.search(r"aten(?:::|\.)[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)?", text)
    return f"its op {found.group(0)} has no ONNX conversion" if found else None


@contextlib.contextmanager
def _quiet() -> Any:
    """torch.onnx prints its steps and onnx_ir logs a warning per empty attribute: keep them off the console."""
    loggers = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript", "torch.onnx")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def session(model: bytes | str | os.PathLike, threads: int | None = None) -> Any:
    """An onnxruntime CPU session of a file or of serialized bytes (``threads``: intra-op threads,
    default torch's thread count, which ``lorun --threads`` sets)."""
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise ImportError("running an ONNX file needs onnxruntime: pip install 'lorun_peft[onnx]'") from err

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or max(1, torch.get_num_threads())
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options, providers=["CPUExecutionProvider"])


def compare(model: bytes, graph: ExportGraph, samples: Sequence[torch.Tensor]) -> float:
    """Max abs difference of every output between onnxruntime and PyTorch over ``samples``."""
    runner = session(model)
    worst = 0.0
    for sample in samples:
        try:
            got = runner.run(None, {runner.get_inputs()[0].name: sample.numpy()})
        except Exception as err:  # noqa: BLE001 - onnxruntime's own error types
            raise ExportError(f"onnxruntime cannot run the exported file on an input shaped {tuple(sample.shape)}: {err}") from err
        with torch.no_grad():
            expected = graph(sample)
        worst = max([worst, *(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected))])
    return worst


def to_onnx(net: UnfoldedNetwork, path: str | os.PathLike, *, image_size: Sequence[int] | None = None,
            simulate: bool = False, atol: float = 1e-4, opset: int | None = None, source: str | None = None,
            seed: int = 0) -> ExportReport:
    """Write ``net`` as one ONNX file at ``path`` and check it on onnxruntime.

    ``image_size`` (height, width; default 256 x 256, a CASSI network's mask size): the sample the
    check runs on. Block CS stays dynamic (any batch, any image of whole blocks); SR and CASSI are
    fixed to this size (any batch), and the runtime refuses another with a clear error.
    ``simulate``: the file takes clean images and measures them itself (for testing; fixed size),
    outputs ``restored``, ``stages`` and ``measurement``. ``atol``: the largest max abs difference
    to PyTorch accepted; past it :class:`~lorun_peft.errors.ExportError` is raised and ``path`` is
    left as it was. ``source``: how the model was named (kept in the metadata).
    """
    try:
        import onnx
    except ImportError as err:
        raise ImportError("ONNX export needs onnx, onnxscript and onnxruntime: pip install 'lorun_peft[onnx]'") from err
    if not isinstance(net, UnfoldedNetwork):
        raise InvalidArgumentError(f"to_onnx exports an UnfoldedNetwork (lorun_peft.unfold), got {type(net).__name__}")
    atol = check_number(atol, "atol")
    path = Path(path)
    if path.suffix.lower() != ".onnx":
        raise InvalidArgumentError(f"the ONNX file's name must end in .onnx, got {path}")
    start = time.perf_counter()
    plain = plain_network(net)
    operator = plain.operator
    height, width = export_size(operator, image_size)
    dynamic = dynamic_shapes(operator, simulate)
    if len(dynamic["data"]) > 1:  # torch.export would fix a dimension of size 1: trace a grid of at least 2 x 2 blocks
        multiple = task_of(operator).size_multiple(operator)[0]
        height, width = max(height, 2 * multiple), max(width, 2 * multiple)
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(2, input_channels(operator, plain), height, width, generator=generator)  # batch 2: see above
    with torch.no_grad():
        measurement = operator.A(image)
    sample = image if simulate else measurement
    graph = ExportGraph(plain, simulate).eval()
    names = ([IMAGE] if simulate else [MEASUREMENT]), ["restored", "stages", *(["measurement"] if simulate else [])]
    try:
        with _quiet():
            program = torch.onnx.export(graph, (sample,), dynamo=True, dynamic_shapes=dynamic,
                                        input_names=names[0], output_names=names[1], opset_version=opset, verbose=False)
    except Exception as err:  # noqa: BLE001 - torch.onnx raises several kinds; all say the graph does not convert
        what = unsupported_op(err) or f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
        raise ExportError(f"{type(operator).__name__} does not convert to ONNX: {what}; {path} was not written") from err
    model = program.model_proto
    # The export leaves reference cycles behind. Left to a later collection, they made a forked
    # child's training abort ("Invalid thread pool") in one measured case: collect them now. (A
    # forked child can still fail after an export; see tests/test_onnx_export.py.)
    del program
    gc.collect()
    metadata = file_metadata(net, plain, simulate=simulate, image_size=(height, width), source=source)
    onnx.helper.set_model_props(model, metadata)
    data = model.SerializeToString()
    # the traced batch of two, a batch of one and of three; block CS: a second grid too
    checks = [sample, sample[:1], torch.cat([sample, sample[:1].flip(-1)])]
    if len(dynamic["data"]) > 1:
        checks.append(torch.cat([sample, sample[..., :1, :]], dim=-2))
    difference = compare(data, graph, checks)
    if not difference <= atol:
        raise ExportError(f"onnxruntime differs from PyTorch by {difference:.3g} (max abs), more than atol={atol:g}: "
                          f"{path} was not written")
    with atomic_write(path) as f:  # only a checked file lands
        f.write(data)
    shape = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    return ExportReport(path, names[0][0], shape, (height, width), difference, atol, time.perf_counter() - start, path.stat().st_size)
