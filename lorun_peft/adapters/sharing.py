"""How the K stages share their denoiser: one trainable copy (Block-1), K copies (Block-K), or one
frozen base with K adapters (LoRun, in ``adapters.StageAdapters``). Every variant is called as
``denoisers(k, z, *extra)`` and runs stage k's denoiser through :func:`call_stage`, so that under
``torch.compile`` one traced denoiser body serves all K stages.

>>> import torch
>>> from torch import nn
>>> d = IndependentDenoisers(nn.Conv2d(1, 1, 3, padding=1), K=2)
>>> d(1, torch.rand(1, 1, 4, 4)).shape
torch.Size([1, 1, 4, 4])
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import os
import sys
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..errors import InvalidArgumentError
from . import engine

__all__ = ["SharedDenoiser", "IndependentDenoisers", "InferenceStages", "inference_engine", "SHARE_MODES", "call_stage"]

SHARE_MODES = ("lora", "base", "none")
WHOLE_SAMPLE = (4, 6)  # the corner of y (in its own units: block CS's blocks) a whole network is prepared on


def call_stage(denoiser: nn.Module, weights: dict[str, torch.Tensor], args: tuple[Any, ...], region: bool = True) -> torch.Tensor:
    """``denoiser(*args)`` with the tensors in ``weights`` (names as in ``named_parameters``) in
    place of its own (``torch.func.functional_call``); ``{}`` keeps them all.

    Eagerly a plain call. Under ``torch.compile`` with ``region`` and gradients off (inference) a
    nested compile region: dynamo traces it once and reuses that graph for every call whose
    inputs look alike (shapes, dtypes, the module's structure), so the K stages of a network share
    one compiled denoiser body, however their weights differ. A region must trace whole (no graph
    break inside the denoiser; dynamo raises otherwise); ``region=False`` lets dynamo inline the
    call as usual. With gradients on, calls are inlined too: in torch 2.14.1 inductor computes
    wrong gradients through a reused region on CPU (a region called 3 times in a chain: the first
    conv's weight gradient off by 0.06; aot_eager is right), so training graphs unroll the stages.

    >>> conv = nn.Conv2d(1, 1, 1, bias=False)
    >>> call_stage(conv, {"weight": torch.full((1, 1, 1, 1), 2.0)}, (torch.ones(1, 1, 1, 1),)).item()
    2.0
    """
    if not region or torch.is_grad_enabled():
        return _stage(denoiser, weights, args)
    return (_weighted_region if weights else _plain_region)(denoiser, weights, args)


def _stage(denoiser: nn.Module, weights: dict[str, torch.Tensor], args: tuple[Any, ...]) -> torch.Tensor:
    """The call itself, outside any region (eager, or ``region=False``)."""
    return torch.func.functional_call(denoiser, weights, args, strict=False) if weights else denoiser(*args)


def _reuse_key(denoiser: nn.Module, weights: dict[str, torch.Tensor], args: tuple[Any, ...]) -> int:
    """Calls with one key differ only in tensor values: the same module, weight names and weight
    gradient flags, the same argument shapes and gradient flags (the K stages of one forward; their
    weights have equal shapes since they fill the same slots). Sizes are part of the key, so under
    dynamic shapes the region specializes them: each image size compiles its own graph."""
    key = [id(denoiser), *weights, sum(w.requires_grad for w in weights.values())]
    for a in args:
        if isinstance(a, torch.Tensor):
            key += [a.requires_grad, *a.shape]
    return hash(tuple(key))


# Plain calls (Block-1, Block-K): dynamo's automatic reuse, which checks inputs and guards itself.
_plain_region = torch.compiler.nested_compile_region(lambda denoiser, weights, args: denoiser(*args))
# functional_call swaps parameters in and out, a side effect automatic reuse refuses (it would
# retrace every stage): weighted calls are keyed by _reuse_key instead.
_weighted_region = torch.compiler.nested_compile_region(
    lambda denoiser, weights, args: torch.func.functional_call(denoiser, weights, args, strict=False), reuse_hash_fn=_reuse_key
)


class SharedDenoiser(nn.Module):
    """Block-1: every stage calls the same trainable denoiser."""

    adapter_names: list[str] = []
    compile_region = True  # torch.compile: one traced denoiser body for all stages (see call_stage)

    def __init__(self, denoiser: nn.Module) -> None:
        super().__init__()
        self.denoiser = denoiser

    def forward(self, k: int, *args: Any) -> torch.Tensor:
        return call_stage(self.denoiser, {}, args, self.compile_region)


class IndependentDenoisers(nn.Module):
    """Block-K: K independent trainable copies of the denoiser, one per stage."""

    adapter_names: list[str] = []
    compile_region = True  # torch.compile: one traced denoiser body for all stages (see call_stage)

    def __init__(self, denoiser: nn.Module | list[nn.Module], K: int) -> None:  # noqa: N803
        """``denoiser``: one module copied K times, or K modules used as they are."""
        super().__init__()
        given = isinstance(denoiser, list)
        self.denoisers = nn.ModuleList(denoiser if given else (copy.deepcopy(denoiser) for _ in range(K)))

    def forward(self, k: int, *args: Any) -> torch.Tensor:
        return call_stage(self.denoisers[k], {}, args, self.compile_region)


_ENGINE: contextvars.ContextVar[str | None] = contextvars.ContextVar("lorun_peft_engine", default=None)


@contextlib.contextmanager
def inference_engine(name: str) -> Iterator[None]:
    """Inside the block, networks that were not given an engine run on ``name`` ("auto",
    "onnxruntime" or "eager"): training validates in "eager", as its weights change between calls.

    >>> with inference_engine("eager"):
    ...     InferenceStages().engine_in_use()
    'eager'
    """
    token = _ENGINE.set(name)
    try:
        yield
    finally:
        _ENGINE.reset(token)


class InferenceStages:
    """The K stage denoisers prepared for fast inference, rebuilt when a weight changes: LoRun's
    adapters merged (W0 + delta_k, as ``merge_and_unload``), then run on the fastest engine
    measured here (benchmarks/engine.py):

    - ``"onnxruntime"`` (:mod:`.engine`): each stage exported once and cached on disk, 0.7-0.8x
      the time of the channels-last copies. It is used where its cache entry exists, and prepared
      (about 1 s a stage, once per set of weights, shown on a terminal) at the first call;
    - ``"eager"``: copies in channels-last memory format, the layout oneDNN's convolutions run
      fastest in on CPU (1.2-1.8x over the functional merged call); also where onnxruntime is
      missing, on GPUs, for other dtypes, or if an export fails (said once).

    Where the whole restoration traces to one graph valid at every size (block CS: the caller
    says so), :meth:`whole` runs it as ONE onnxruntime graph, data steps included: no hand-over
    between runtimes at each stage (2 threads, 256 x 256: 1.01-1.06x of ``lorun export``'s file).
    The copies are not submodules: never saved, trained or counted.

    >>> import torch
    >>> d = IndependentDenoisers(nn.Conv2d(1, 1, 3, padding=1), K=2)
    >>> fast = InferenceStages(engine="eager")
    >>> z = torch.rand(1, 1, 8, 8)
    >>> with torch.no_grad():
    ...     torch.allclose(fast(d, 1, z), d(1, z), atol=1e-6)
    True
    """

    ENGINES = ("auto", "onnxruntime", "eager")

    def __init__(self, engine: str | None = None) -> None:
        self.engine = engine  # None: inference_engine's, else $LORUN_ENGINE, else "auto"
        self._pins, self._checked = 0, False  # inside one_restoration; the weights checked there
        self._threads: int | None = None  # torch's thread count when the outermost restoration began
        self.clear()

    def engine_in_use(self) -> str:
        """The engine asked for: ``engine``, else :func:`inference_engine`'s, else ``$LORUN_ENGINE`` (the
        test suite sets "eager"), else "auto"."""
        engine = self.engine or _ENGINE.get() or os.environ.get("LORUN_ENGINE") or "auto"
        if engine not in self.ENGINES:
            raise InvalidArgumentError(f"the inference engine must be one of {list(self.ENGINES)}, got {engine!r}")
        return engine

    @staticmethod
    def _weights_key(denoisers: nn.Module) -> tuple:
        """Changes whenever a weight does: in place (its version), replaced (its storage), or moved."""
        return tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in [*denoisers.parameters(), *denoisers.buffers()])

    def one_restoration(self) -> contextlib.AbstractContextManager[None]:
        """One restoration (``UnfoldedNetwork.forward``): a context in which, where this path runs
        (gradients off, not under ``torch.compile``, which must not trace it)

        - the weights are checked once (at the first stage), not at every stage: they cannot change
          meanwhile, and walking a PEFT model's parameters costs about 1.3 ms, 2 % of a 256 x 256
          restore if done K times;
        - once a stage has run on onnxruntime, PyTorch's work between stages (the data steps, 1-2 %
          of the time) runs on one thread: with more, PyTorch's OpenMP workers keep spinning on the
          cores onnxruntime's pool needs (2 threads, 256 x 256: 354 ms a restore, 293 on one).
          The thread count is given back when the restoration ends, however it ends.
        """
        if torch.compiler.is_compiling() or torch.is_grad_enabled():
            return contextlib.nullcontext()
        return self._restoring()

    @contextlib.contextmanager
    def _restoring(self) -> Iterator[None]:
        outermost = self._pins == 0
        if outermost:
            self._threads = torch.get_num_threads()
        self._pins += 1
        try:
            yield
        finally:
            self._pins -= 1
            if outermost:
                self._checked = False
                if torch.get_num_threads() != self._threads:
                    torch.set_num_threads(self._threads)
                self._threads = None

    @torch.no_grad()
    def stages(self, denoisers: nn.Module) -> list[nn.Module]:
        """The prepared stage modules of ``denoisers`` (LoRun's ``StageAdapters``, Block-1 or Block-K)."""
        if self._checked and self._stages:
            return self._stages
        key = self._weights_key(denoisers)
        self._checked = self._pins > 0
        if key != self._key:
            if hasattr(denoisers, "merged_denoisers"):
                plain = denoisers.merged_denoisers()
            elif isinstance(denoisers, SharedDenoiser):
                plain = [copy.deepcopy(denoisers.denoiser)]
            else:
                plain = [copy.deepcopy(d) for d in denoisers.denoisers]
            self._clear_stages()
            self._stages = [m.requires_grad_(False).eval().to(memory_format=torch.channels_last) for m in plain]
            self._key = key
        return self._stages

    def clear(self) -> None:
        """Drop the prepared copies (training: they would only hold memory)."""
        self._clear_stages()
        self._whole: Any = None  # the whole network on onnxruntime (whole), and the weights it was built from
        self._whole_key: tuple | None = None
        self._whole_failed: set[tuple] = set()  # the keys that did not trace whole
        self._whole_refused: set[tuple[int, ...]] = set()  # measurement shapes its graph failed on

    def _clear_stages(self) -> None:
        self._key: tuple | None = None
        self._stages: list[nn.Module] = []
        self._onnx: list[Any] | None = None
        self._onnx_failed = False
        self._ort_refused: set[tuple[int, ...]] = set()  # input shapes the onnxruntime graphs failed on

    def __deepcopy__(self, memo: dict) -> "InferenceStages":
        """A copy of a network prepares its own (onnxruntime sessions cannot be copied)."""
        return InferenceStages(self.engine)

    def _applies(self, x: torch.Tensor) -> bool:
        """Whether onnxruntime may run on ``x`` (see the class docstring)."""
        return (self.engine_in_use() != "eager" and x.device.type == "cpu" and x.dtype == torch.float32
                and not torch.compiler.is_compiling() and engine.available())

    @torch.no_grad()
    def whole(self, network: nn.Module, y: torch.Tensor, traced: Callable[[], nn.Module], note: str) -> torch.Tensor | None:
        """``network(y)`` as one onnxruntime graph, or None where it does not apply or fails (the
        caller then runs the stages). ``traced()`` builds the module to export (``network`` with
        its stages in PyTorch), once per set of weights (``network``'s parameters and buffers: the
        operator's and the steps' too); ``note`` describes what the weights do not (the settings)."""
        if not self._applies(y) or tuple(y.shape) in self._whole_refused:
            return None
        threads = self._threads or torch.get_num_threads()
        key = (self._weights_key(network), note)  # the settings too: an operator fitted to another image size
        if key in self._whole_failed:
            return None
        if self._whole is None or self._whole_key != key or self._whole.threads != threads:
            try:  # traced and probed on a corner of y: a block-CS y of 32 x 32 blocks is a 1024 x 1024 image
                sample = y[:1, ..., :WHOLE_SAMPLE[0], :WHOLE_SAMPLE[1]]
                self._whole = engine.onnx_stages([traced()], (sample,), threads, note=note)[0]
            except Exception:  # noqa: BLE001 - a network that does not trace whole runs stage by stage
                self._whole_failed.add(key)
                return None
            self._whole_key = key
        try:
            return self._whole(y).to(y.device)
        except Exception:  # noqa: BLE001 - a size the graph cannot take: this call stage by stage
            self._whole_refused.add(tuple(y.shape))
            return None

    def _onnx_stages(self, stages: list[nn.Module], args: tuple[torch.Tensor, ...],
                     threads: int) -> list[Any] | None:
        """The onnxruntime stages where the engine applies (see the class docstring), else None."""
        if self._onnx_failed or not self._applies(args[0]):
            return None
        if self._onnx is not None and self._onnx[0].threads == threads:
            return self._onnx
        try:
            self._onnx = engine.onnx_stages(stages, args, threads)
        except Exception as err:  # noqa: BLE001 - any export failure leaves the (correct) PyTorch path
            self._onnx_failed = True
            print(f"lorun_peft: note: restoring in PyTorch (the onnxruntime engine is unavailable for this network: "
                  f"{type(err).__name__}: {str(err)[:200]})", file=sys.stderr)
            return None
        return self._onnx

    def __call__(self, denoisers: nn.Module, k: int, z: torch.Tensor, *extra: Any) -> torch.Tensor:
        stages = self.stages(denoisers)
        threads = self._threads or torch.get_num_threads()
        onnx = self._onnx_stages(stages, (z, *extra), threads)
        if onnx is not None and tuple(z.shape) not in self._ort_refused:
            try:
                out = onnx[k if len(onnx) > 1 else 0](z, *extra).to(z.device)
                if self._pins and threads > 1:
                    torch.set_num_threads(1)  # the data steps until the next stage (one_restoration)
                return out
            except Exception as err:  # noqa: BLE001 - a size the graph cannot take: this call in PyTorch
                if not self._ort_refused:
                    print(f"lorun_peft: note: restoring {tuple(z.shape)} in PyTorch (the onnxruntime engine "
                          f"refused it: {type(err).__name__}: {str(err)[:200]})", file=sys.stderr)
                self._ort_refused.add(tuple(z.shape))
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)  # a stage in PyTorch gets every thread again
        stage = stages[k] if len(stages) > 1 else stages[0]
        if z.dim() == 4:
            z = z.contiguous(memory_format=torch.channels_last)
        return stage(z, *extra).contiguous()
