"""The K stage denoisers on onnxruntime: the fastest engine measured on this library's weights
(benchmarks/engine.py), prepared once per set of weights and cached on disk.

Each prepared stage (adapters merged, see :class:`~lorun_peft.adapters.sharing.InferenceStages`) is
exported with torch's TorchScript ONNX exporter (about 0.1-1 s a stage) at a dynamic batch and size,
so one file serves every image size; the data steps stay in PyTorch (where the whole restoration
traces at any size, block CS, it is exported as one "stage" instead:
:meth:`~lorun_peft.adapters.sharing.InferenceStages.whole`). It is traced on a crop with odd
sides (:data:`TRACE`): a denoiser that pads to its grid (a U-Net's ``2**depth``) then records the
padding as arithmetic on the size, where a trace at a multiple of the grid leaves it out and fails
at every other size. The files live in
``$LORUN_CACHE/engine/<key>/`` (default ``$XDG_CACHE_HOME/lorun_peft``, else ``~/.cache/lorun_peft``),
the key a SHA-256 of the weights, the stage modules' classes, the arguments' layout and the torch,
onnxruntime and engine versions, so weights or libraries that change never meet a stale file. A
``manifest.json`` records each file's SHA-256: a file that differs (damaged, half-copied) is never
run; the entry is rebuilt. The newest :data:`KEEP` entries are kept.

>>> import torch
>>> from torch import nn
>>> stages = [nn.Conv2d(1, 1, 3, padding=1).eval() for _ in range(2)]
>>> z = torch.rand(1, 1, 16, 16)
>>> key = engine_key(stages, (z,))
>>> len(key), key == engine_key(stages, (torch.rand(2, 1, 32, 8),))  # any batch and size: one key
(64, True)
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from .. import __version__

__all__ = ["OrtStage", "engine_key", "cache_root", "onnx_stages", "available", "KEEP", "TOLERANCE"]

ENGINE_VERSION = "2"  # 2: traced at odd sides
OPSET = 17
KEEP = 32  # cache entries kept (the newest by use)
TOLERANCE = 1e-4  # a prepared stage must match PyTorch to this (max abs difference) on a probe
MANIFEST = "manifest.json"
TRACE = (45, 53)  # the largest crop of the first call's input traced (sides made odd)
PROBES = ((16, 16), (32, 48), (23, 37))  # the sizes (cut from the first call's input) each stage is checked on


def available() -> bool:
    """Whether onnxruntime can be imported (``pip install onnxruntime``; a dependency of lorun_peft)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def cache_root() -> Path:
    """``$LORUN_CACHE``, else ``$XDG_CACHE_HOME/lorun_peft``, else ``~/.cache/lorun_peft`` (read at call time)."""
    if os.environ.get("LORUN_CACHE"):
        return Path(os.environ["LORUN_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path("~/.cache").expanduser()).expanduser() / "lorun_peft"


def engine_key(stages: Sequence[nn.Module], args: Sequence[torch.Tensor], note: str = "") -> str:
    """The cache key of ``stages`` called with arguments like ``args`` (their ranks and channels,
    not their batch or size): weights, classes, library versions and ``note`` (settings the weights
    do not show)."""
    import onnxruntime

    digest = hashlib.sha256(f"lorun_peft engine {ENGINE_VERSION} {__version__} torch {torch.__version__} "
                            f"onnxruntime {onnxruntime.__version__} opset {OPSET}\n{note}\n".encode())
    digest.update(repr([(a.dim(), a.shape[1] if a.dim() > 1 else None, str(a.dtype)) for a in args]).encode())
    for stage in stages:
        digest.update(f"{type(stage).__module__}.{type(stage).__qualname__}\n".encode())
        for name, tensor in stage.state_dict().items():
            tensor = tensor.detach().cpu().contiguous()
            digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


class OrtStage:
    """One stage denoiser on onnxruntime's CPU provider, called like the module: ``stage(z, *extra)``."""

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.log_severity_level = 4  # a size the graph refuses is raised, and the caller falls back
        # no spinning after a run: the data step runs in PyTorch next, whose threads would find the
        # cores taken (2 threads, 256 x 256: 672 ms a restore with spinning, 370 without)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.threads = threads
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]

    def __call__(self, *args: torch.Tensor) -> torch.Tensor:
        feeds = {name: a.detach().to("cpu", torch.float32).contiguous().numpy() for name, a in zip(self.names, args)}
        return torch.from_numpy(self.session.run(None, feeds)[0])


def _export(stage: nn.Module, args: Sequence[torch.Tensor]) -> bytes:
    names = [f"input_{i}" for i in range(len(args))]
    axes = {name: ({0: "batch", 2: "height", 3: "width"} if a.dim() == 4 else {0: "batch"}) for name, a in zip(names, args)}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(stage.to(memory_format=torch.contiguous_format), tuple(args), buffer, input_names=names,
                          output_names=["output"], dynamic_axes={**axes, "output": {0: "batch", 2: "height", 3: "width"}},
                          opset_version=OPSET, dynamo=False)
    return buffer.getvalue()


def _crop(args: Sequence[torch.Tensor], height: int, width: int) -> list[torch.Tensor]:
    """The first item of ``args``, images cut to at most ``height`` x ``width``."""
    return [a[:1, ..., :height, :width] if a.dim() == 4 else a[:1] for a in args]


def _trace_args(stage: nn.Module, args: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``args`` cut to odd sides (:data:`TRACE`), if the stage takes them, else as they are."""
    height, width = (min(side, most) for side, most in zip(args[0].shape[-2:], TRACE))
    odd = _crop(args, height - 1 + height % 2, width - 1 + width % 2)
    try:
        stage(*odd)
    except Exception:  # noqa: BLE001 - a denoiser that takes only sizes like the call's
        return _crop(args, *args[0].shape[-2:])
    return odd


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _load(folder: Path, count: int, threads: int) -> list[OrtStage] | None:
    """The stages of a cache entry whose files all match its manifest, else None."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files = [folder / f"stage_{k}.onnx" for k in range(count)]
        if manifest.get("files") != {f.name: _sha256(f) for f in files}:
            return None
        stages = [OrtStage(f, threads) for f in files]
    except Exception:  # noqa: BLE001 - anything unreadable is a damaged entry: rebuilt, never run
        return None
    os.utime(folder / MANIFEST)  # most recently used
    return stages


def _prune(root: Path) -> None:
    """Keep the :data:`KEEP` most recently used entries."""
    keep = KEEP
    entries = sorted((p for p in root.iterdir() if (p / MANIFEST).is_file()), key=lambda p: (p / MANIFEST).stat().st_mtime)
    for old in entries[:-keep] if len(entries) > keep else []:
        shutil.rmtree(old, ignore_errors=True)


@torch.no_grad()
def onnx_stages(stages: Sequence[nn.Module], args: Sequence[torch.Tensor], threads: int | None = None,
                progress: bool | None = None, note: str = "") -> list[OrtStage]:
    """``stages`` (the stage denoisers, or a whole network as one) on onnxruntime: from the cache,
    else exported now (a bar on a terminal) and cached; ``note`` goes into the key (:func:`engine_key`).
    Each stage is checked against PyTorch on crops of ``args`` (:data:`PROBES`) before use; raises if
    the export fails or differs by more than :data:`TOLERANCE` (callers then stay in PyTorch)."""
    threads = threads or torch.get_num_threads()
    key = engine_key(stages, args, note)
    root = cache_root() / "engine"
    folder = root / key
    loaded = _load(folder, len(stages), threads) if (folder / MANIFEST).is_file() else None
    if loaded is None:
        if folder.exists():
            print(f"lorun_peft: the cached onnxruntime engine {folder} is damaged; rebuilding it", file=sys.stderr)
        from tqdm.auto import tqdm

        show = progress if progress is not None else sys.stderr.isatty()
        start = time.perf_counter()
        models = [_export(stage, _trace_args(stage, args)) for stage in tqdm(stages, desc="preparing the onnxruntime engine (once, cached)",
                                                          unit="stage", disable=not show, leave=False)]

        def fill(tmp: Path) -> None:
            for k, model in enumerate(models):
                (tmp / f"stage_{k}.onnx").write_bytes(model)
            files = {f"stage_{k}.onnx": hashlib.sha256(model).hexdigest() for k, model in enumerate(models)}
            (tmp / MANIFEST).write_text(json.dumps({"files": files, "seconds": time.perf_counter() - start}))

        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=root))  # filled, then renamed: never half-written
        try:
            fill(tmp)
            shutil.rmtree(folder, ignore_errors=True)  # a damaged entry
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _prune(root)
        loaded = _load(folder, len(stages), threads)
        if loaded is None:
            raise RuntimeError(f"the onnxruntime engine written to {folder} cannot be read back")
    for height, width in PROBES:  # sizes other than the traced one: a graph specialised to a size fails here
        probe = _crop(args, height, width)
        for stage, ort_stage in zip(stages, loaded):
            try:
                expected = stage(*probe).cpu()
            except Exception:  # noqa: BLE001 - a size the denoiser itself refuses is no test
                break
            difference = float((ort_stage(*probe) - expected).abs().max())
            if not difference <= TOLERANCE:
                raise RuntimeError(f"the onnxruntime engine differs from PyTorch by {difference:.2e} (> {TOLERANCE}) "
                                   f"on a {height} x {width} probe")
    return loaded
