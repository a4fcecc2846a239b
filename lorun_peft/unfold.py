"""``unfold()`` and ``UnfoldedNetwork``: K stages of (data step, denoiser) as in the LoRun paper.

>>> import torch
>>> from torch import nn
>>> from lorun_peft.operators import BlockCS
>>> denoiser = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1))
>>> net = unfold(denoiser, BlockCS(0.25, block=8), K=3)
>>> net.adapter_names
['stage_0', 'stage_1', 'stage_2']
>>> y = net.operator(torch.rand(1, 1, 16, 16))
>>> net(y).shape
torch.Size([1, 1, 16, 16])
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import torch
import torch.utils.checkpoint
from torch import nn

from .adapters.stages import RankTable, StageAdapters, plan_ranks
from .config import UnfoldConfig
from .data.colour import as_gray_batch, check_policy, from_gray_batch, rgb_to_ycbcr, ycbcr_to_rgb
from .errors import InvalidArgumentError
from .operators.base import fit_operator, initial_estimate
from .persistence.methods import BundleMethods
from .adapters.report import ParameterReport, count
from .adapters.sharing import IndependentDenoisers, InferenceStages, SharedDenoiser
from .steps import STEPS
from .tasks import task_of

__all__ = ["unfold", "load", "measure_and_restore", "colour_policy", "network_channels", "UnfoldedNetwork"]


def unfold(denoiser: nn.Module, operator: Any, K: int = 9, *, config: UnfoldConfig | None = None, **options: Any) -> "UnfoldedNetwork":  # noqa: N803
    """Unfold ``denoiser`` and ``operator`` into a K-stage network.

    ``options`` are the fields of :class:`~lorun_peft.config.UnfoldConfig` (or pass ``config``):
    ``algorithm`` "pgd"|"hqs"; ``gamma`` (rank rule percentage, 10); ``share`` "lora" (LoRun: one
    frozen base + K PEFT adapters ``stage_0..stage_{K-1}``), "base" (Block-1: one shared trainable
    denoiser) or "none" (Block-K: K copies); ``adapter`` "lora"|"dora"|"loha"|"lokr";
    ``target_modules``; ``noise_level=True`` calls the denoiser as ``D(z, sigma)`` with a
    per-sample sigma tensor; ``checkpoint`` (activation checkpointing); ``adapter_options`` go to
    the PEFT config (for example ``{"init_lora_weights": False}``). The denoiser is copied, so
    the module you pass is left untouched.
    """
    if config is not None and (options or K != 9):
        raise InvalidArgumentError("pass either config= or the settings as keyword arguments, not both")
    if config is None:
        fields = set(UnfoldConfig.SETTINGS) - {"K"}
        unknown = sorted(set(options) - fields)
        if unknown:
            raise InvalidArgumentError(f"unfold() got unknown settings {unknown}; the settings are {sorted(fields)}")
        config = UnfoldConfig(K=K, **options)
    return UnfoldedNetwork(denoiser, operator, config)


class UnfoldedNetwork(BundleMethods, nn.Module):
    """A K-stage deep unfolding network; see :func:`unfold`. ``net.config`` holds its settings
    (an :class:`~lorun_peft.config.UnfoldConfig`); ``net.K``, ``net.share``, ... read them."""

    def __init__(self, denoiser: nn.Module, operator: Any, config: UnfoldConfig | None = None) -> None:
        super().__init__()
        config = UnfoldConfig() if config is None else config
        if not isinstance(config, UnfoldConfig):
            raise InvalidArgumentError(f"config must be an UnfoldConfig, got {type(config).__name__}")
        _check_modules(denoiser, operator)
        if config.share == "lora":  # fail on a denoiser without adaptable layers before building anything
            plan_ranks(denoiser, config.gamma, config.adapter, config.target_modules)
        self.config = config.replace(operator=None, denoiser=None)  # those two are read live: unfold_config()
        self.operator = operator
        # inference (eval mode, gradients off): "fast" (the stages prepared once, adapters merged, on
        # onnxruntime or channels-last copies: adapters.sharing.InferenceStages), "merged" (W0 + delta_k
        # computed on the fly) or "peft" (PEFT's adapter branches)
        self.inference = "fast"
        self._fast = InferenceStages()
        self.steps = STEPS[config.algorithm](config.K, config.noise_level)
        denoiser = copy.deepcopy(denoiser)
        if config.share == "lora":
            self.denoisers = StageAdapters(denoiser, config.K, config.gamma, config.adapter, config.target_modules, config.adapter_options)
        elif config.share == "base":
            self.denoisers = SharedDenoiser(denoiser)
        else:
            self.denoisers = IndependentDenoisers(denoiser, config.K)

    K = property(lambda self: self.config.K, doc="the number of stages")
    algorithm = property(lambda self: self.config.algorithm, doc='"pgd" or "hqs"')
    gamma = property(lambda self: self.config.gamma, doc="the rank rule's percentage")
    share = property(lambda self: self.config.share, doc='"lora" (LoRun), "base" (Block-1) or "none" (Block-K)')
    adapter = property(lambda self: self.config.adapter, doc="the PEFT adapter kind")
    target_modules = property(lambda self: self.config.target_modules, doc="the adapted layers (None: every conv/linear)")
    noise_level = property(lambda self: self.config.noise_level, doc="whether the denoiser is called as D(z, sigma)")
    @property
    def checkpoint(self) -> bool:
        """Activation checkpointing while training (settable: ``net.checkpoint = True``)."""
        return self.config.checkpoint

    @checkpoint.setter
    def checkpoint(self, value: bool) -> None:
        self.config = self.config.replace(checkpoint=value)

    adapter_options = property(lambda self: self.config.adapter_options, doc="extra PEFT config options")

    @property
    def compile_stages(self) -> bool:
        """Under ``torch.compile`` at inference (gradients off), trace the denoiser once and reuse
        that graph for all K stages (a nested compile region; default True; training graphs always
        unroll the stages, see ``sharing.call_stage``). A denoiser that breaks the graph
        (data-dependent ``if``, ``print``) cannot be one region: dynamo then raises
        ``UncapturedHigherOrderOpError``; set ``net.compile_stages = False`` to inline every stage."""
        return self.denoisers.compile_region

    @compile_stages.setter
    def compile_stages(self, value: bool) -> None:
        self.denoisers.compile_region = bool(value)

    def train(self, mode: bool = True) -> "UnfoldedNetwork":
        """nn.Module.train; training also drops the prepared inference copies (``inference``)."""
        if mode:
            self._fast.clear()
        return super().train(mode)

    # ---- the stage loop -------------------------------------------------------------------
    def forward(self, y: torch.Tensor, return_stages: bool = False):
        """Restore from measurement ``y``; with ``return_stages`` also the K per-stage outputs."""
        with self._fast.one_restoration():  # the prepared inference weights are checked once
            whole = None if return_stages else self._as_one_graph(y)
            if whole is not None:  # block CS at inference: the lines below, run as one onnxruntime graph
                return whole
            x, stages = self._initial_estimate(y), []
            for k in range(self.K):
                z = self.steps(k, x, y, self.operator)  # data step: PGD gradient step or HQS prox
                x = self._denoise(k, z)  # proximal step: D_k(z) (stage k's adapter)
                if return_stages:  # a large image's restore keeps no K stage images
                    stages.append(x)
        return (x, stages) if return_stages else x

    def _as_one_graph(self, y: torch.Tensor) -> torch.Tensor | None:
        """The restoration as one onnxruntime graph (``InferenceStages.whole``) where the fast
        path runs and the task's network traces at every size (its exported file is dynamic:
        block CS); else None. Like that file, the graph is size-free: it serves an operator fitted
        to any multiple of the task's size (``Task.size_multiple``), and the stages serve the rest.
        Only y's checks run in PyTorch: their threads would spin on the cores onnxruntime needs (a
        size the graph refuses, or a y that does not fit, goes on to the stages, which explain it)."""
        task, fitted = task_of(self.operator), getattr(self.operator, "image_size", None)
        if (not self._runs_fast() or task.dynamic_axes(self.operator, simulate=False) is None
                or (fitted is not None and any(side % task.size_multiple(self.operator)[0] for side in fitted))):
            return None
        self._check_measurement(y)
        with fit_operator(self.operator, None):
            settings = getattr(self.operator, "config", None)
            note = f"whole network {self.config!r} {type(self.operator).__qualname__} {settings() if callable(settings) else ''}"
            x = self._fast.whole(self, y, self._in_pytorch, note)
        return None if x is None or (fitted is not None and tuple(x.shape[-2:]) != tuple(fitted)) else x

    def _runs_fast(self) -> bool:
        """Whether this call takes the prepared inference path (``adapters.sharing.InferenceStages``):
        eval mode, ``inference="fast"``, gradients off, not under ``torch.compile``, mergeable stages."""
        return (not self.training and self.inference == "fast" and not torch.is_grad_enabled()
                and not torch.compiler.is_compiling() and getattr(self.denoisers, "can_merge", True))

    def _in_pytorch(self) -> "UnfoldedNetwork":
        """This network with its stages in PyTorch, sharing its modules (what :meth:`_as_one_graph` traces)."""
        plain = copy.copy(self)
        plain._fast = InferenceStages("eager")
        return plain

    def _denoise(self, k: int, z: torch.Tensor) -> torch.Tensor:
        args = (z, self.steps.noise_sigma(k).expand(z.shape[0])) if self.noise_level else (z,)
        if self.checkpoint and self.training and torch.is_grad_enabled():
            # The adapter is switched inside the checkpointed call, so recomputation uses stage k.
            out = torch.utils.checkpoint.checkpoint(self.denoisers, k, *args, use_reentrant=False)
        elif self._runs_fast():
            out = self._fast(self.denoisers, k, *args)
        elif not self.training and self.inference in ("fast", "merged") and getattr(self.denoisers, "can_merge", False):
            out = self.denoisers.merged_forward(k, *args)
        else:
            out = self.denoisers(k, *args)
        if not isinstance(out, torch.Tensor) or out.shape != z.shape:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise InvalidArgumentError(
                f"denoiser output shape {shape} differs from its input shape {tuple(z.shape)}; "
                "the denoiser must map an image to an image of the same shape"
            )
        return out

    def _check_measurement(self, y: torch.Tensor) -> None:
        """Raise for a y this network cannot take: not floating point, another dtype or device than
        the network's, NaN or Inf."""
        if not isinstance(y, torch.Tensor) or not y.is_floating_point():
            raise InvalidArgumentError(f"y must be a floating-point tensor, got {type(y).__name__} {getattr(y, 'dtype', '')}")
        reference = self.steps.parameters().__next__()
        if y.dtype != reference.dtype or y.device != reference.device:
            raise InvalidArgumentError(
                f"y is {y.dtype} on {y.device} but the network is {reference.dtype} on {reference.device}; "
                "move one of them with .to()"
            )
        if isinstance(self.operator, nn.Module):
            for t in [*self.operator.parameters(), *self.operator.buffers()]:
                if t.is_floating_point() and (t.dtype != reference.dtype or t.device != reference.device):
                    raise InvalidArgumentError(
                        f"the operator holds {t.dtype} on {t.device} but the network's step parameters are "
                        f"{reference.dtype} on {reference.device}; move the whole network with net.to(...)"
                    )
        if not torch.compiler.is_compiling() and not bool(torch.isfinite(y).all()):  # a value check breaks a compiled graph
            raise InvalidArgumentError("y contains NaN or Inf values")

    def _initial_estimate(self, y: torch.Tensor) -> torch.Tensor:
        """x_0 from the operator (its ``initial_estimate`` or A^T y), after checking y."""
        self._check_measurement(y)
        if torch.compiler.is_compiling():  # the shape check below would break the compiled graph
            return initial_estimate(self.operator, y)
        try:
            x0 = initial_estimate(self.operator, y)
            with torch.no_grad():
                fits = self.operator.A(x0).shape == y.shape
        except (RuntimeError, ValueError, IndexError) as err:
            raise InvalidArgumentError(f"y of shape {tuple(y.shape)} does not fit the operator: {err}") from err
        if not fits:
            raise InvalidArgumentError(f"y of shape {tuple(y.shape)} does not fit the operator (A(A^T y) has another shape)")
        return x0

    # ---- structure ------------------------------------------------------------------------
    @property
    def adapter_names(self) -> list[str]:
        """``["stage_0", ...]`` in LoRun mode, ``[]`` for Block-1 and Block-K."""
        return list(self.denoisers.adapter_names)

    def to_lora(self, gamma: float | None = None) -> "UnfoldedNetwork":
        """Phase 2 of Algorithm 1: freeze the trained shared denoiser and add K adapters.

        Keeps the trained base, the step parameters and the operator's state. In place; returns self.
        """
        if self.share != "base":
            what = "already LoRun" if self.share == "lora" else "Block-K (share='none')"
            raise InvalidArgumentError(f"to_lora needs a share='base' (Block-1) network; this one is {what}")
        gamma = self.gamma if gamma is None else gamma
        base = self.denoisers.denoiser
        plan_ranks(base, gamma, self.adapter, self.target_modules)  # validate before changing anything
        compile_stages = self.compile_stages
        self.denoisers = StageAdapters(base, self.K, gamma, self.adapter, self.target_modules, self.adapter_options)
        self.compile_stages = compile_stages
        self.config = self.config.replace(share="lora", gamma=gamma)
        return self

    def merge_and_unload(self) -> "UnfoldedNetwork":
        """A plain Block-K network (``share="none"``): K denoisers with the adapters merged in
        (W0 + delta_k), no PEFT modules, the same step parameters and a copy of the operator.
        Its eval outputs equal this network's merged path bit for bit; this network is unchanged.

        >>> import torch
        >>> from torch import nn
        >>> from lorun_peft.operators import BlockCS
        >>> net = unfold(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1)),
        ...              BlockCS(0.25, block=8), K=2).eval()
        >>> plain = net.merge_and_unload()
        >>> plain.share, len(plain.denoisers.denoisers)
        ('none', 2)
        >>> y = net.operator.A(torch.rand(1, 1, 16, 16))
        >>> torch.equal(plain(y), net(y))
        True
        """
        if self.share != "lora" or not getattr(self.denoisers, "can_merge", False):
            raise InvalidArgumentError(f"merge_and_unload needs a LoRun network with mergeable adapters; this one has share={self.share!r}, adapter={self.adapter!r}")
        merged = self.denoisers.merged_denoisers()
        plain = UnfoldedNetwork(merged[0], copy.deepcopy(self.operator), UnfoldConfig(
            K=self.K, algorithm=self.algorithm, gamma=self.gamma, share="none", noise_level=self.noise_level, checkpoint=self.checkpoint,
        ))
        plain.denoisers = IndependentDenoisers(merged, self.K)
        plain.steps.load_state_dict(self.steps.state_dict())
        return plain.train(self.training)

    def print_trainable_parameters(self) -> None:
        """PEFT's one-line summary: trainable params, all params and the trainable share."""
        trainable = count(p for p in self.parameters() if p.requires_grad)
        total = count(self.parameters())
        print(f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / max(total, 1):.4f}")

    def rank_table(self) -> RankTable:
        """Every adapted layer with in/out dims and rank, plus the shared-only layers."""
        if self.share == "lora":
            return self.denoisers.table
        base = self.denoisers.denoiser if self.share == "base" else self.denoisers.denoisers[0]
        return plan_ranks(base, self.gamma, self.adapter, self.target_modules)

    def parameter_report(self) -> ParameterReport:
        """Parameter counts: base, per-stage adapters, step, operator, trainable, total, Block-K."""
        if self.share == "lora":
            base = count(self.denoisers.base_parameters())
            adapters = {n: count(self.denoisers.adapter_parameters(k)) for k, n in enumerate(self.adapter_names)}
        else:
            one = self.denoisers.denoiser if self.share == "base" else self.denoisers.denoisers[0]
            base, adapters = count(one.parameters()), {}
        step = count(self.steps.parameters())
        operator = count(self.operator.parameters()) if isinstance(self.operator, nn.Module) else 0
        return ParameterReport(
            K=self.K, share=self.share, base=base, adapters=adapters, step=step, operator=operator,
            trainable=count(p for p in self.parameters() if p.requires_grad),
            total=count(self.parameters()), block_k=self.K * base + step + operator,
        )


def load(base: nn.Module | str, bundle: Any, **options: Any) -> UnfoldedNetwork:
    """A ready LoRun network (eval mode) from a saved base (folder, Hub repo or module) and a task
    bundle; see :meth:`UnfoldedNetwork.from_bundle` for the options (subfolder, revision, module=
    for your own denoiser class, base_subfolder, ...)."""
    return UnfoldedNetwork.from_bundle(base, bundle, **options)


def measure_and_restore(
    net: nn.Module, x: torch.Tensor | None, noise_sigma: float = 0.0, generator: torch.Generator | None = None, *,
    y: torch.Tensor | None = None, stages: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Measure images ``x`` with the network's own operator (sized to them) as its task simulates it
    (:meth:`lorun_peft.tasks.Task.simulate`: Gaussian noise of ``noise_sigma`` drawn from
    ``generator``; a deepinv physics adds its own noise model), and restore: ``(y, x_0, x_hat, stages)``, not clamped.
    With ``x=None`` the measurement ``y=`` is given (noise is still added). Evaluation, the demo and
    the app all restore through here. ``stages=False`` returns no stage outputs (and keeps none in
    memory: a large image's restore).

    A gray network given colour images (N x 3 x H x W, or such a measurement) follows the task's
    colour policy (:mod:`lorun_peft.data.colour`, :func:`colour_policy`): x_0, x_hat and the stages
    come back in colour; y holds the gray measurements the network saw, R, G, B of each image in turn.

    >>> from lorun_peft.operators import BlockCS
    >>> net = unfold(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1)), BlockCS(0.25, block=8), K=2).eval()
    >>> with torch.no_grad():
    ...     y, x0, x_hat, stages = measure_and_restore(net, torch.rand(1, 1, 16, 16), 0.01, torch.Generator().manual_seed(0))
    >>> tuple(y.shape), tuple(x0.shape), tuple(x_hat.shape), len(stages)
    ((1, 16, 2, 2), (1, 1, 16, 16), (1, 1, 16, 16), 2)
    >>> with torch.no_grad():  # a colour image: R, G and B measured and restored
    ...     y, x0, x_hat, stages = measure_and_restore(net, torch.rand(1, 3, 16, 16))
    >>> tuple(y.shape), tuple(x_hat.shape)
    ((3, 16, 2, 2), (1, 3, 16, 16))
    """
    operator = net.operator
    task = task_of(operator)
    policy = colour_policy(net, x if x is not None else y if task.measurement_is_image else None)
    with fit_operator(operator, x.shape[-2:]) if x is not None else contextlib.nullcontext():
        if x is not None:
            y = task.simulate(operator, as_gray_batch(x) if policy else x, noise_sigma, generator)
        elif y is None:
            raise InvalidArgumentError("measure_and_restore needs images x or a measurement y=")
        else:
            y = as_gray_batch(y) if policy else y
            if noise_sigma:
                y = y + noise_sigma * torch.randn(y.shape, generator=generator, dtype=y.dtype).to(y.device)
        seen, chroma = y, None
        if policy == "luma":  # the network restores Y; Cb and Cr are the operator's estimate from theirs
            ycbcr = rgb_to_ycbcr(from_gray_batch(y))
            seen = ycbcr[:, :1]
            chroma = from_gray_batch(initial_estimate(operator, as_gray_batch(ycbcr[:, 1:])), 2)
        x0 = initial_estimate(operator, seen)
        x_hat, outputs = net(seen, return_stages=True) if stages else (net(seen), [])
    if policy == "luma":
        def colour(image: torch.Tensor) -> torch.Tensor:
            return ycbcr_to_rgb(torch.cat([image, chroma], dim=1))
    else:
        colour = from_gray_batch if policy else (lambda image: image)
    return y, colour(x0), colour(x_hat), [colour(stage) for stage in outputs]


def colour_policy(net: nn.Module, images: torch.Tensor | None) -> str | None:
    """How ``net`` restores ``images``: its task's colour policy ("channels" or "luma", see
    :mod:`lorun_peft.data.colour`) when a gray network meets N x 3 x H x W colour images, else None
    (the network takes them as they are)."""
    if images is None or images.dim() != 4 or images.shape[1] != 3 or network_channels(net) != 1:
        return None
    policy = check_policy(task_of(net.operator).colour)
    return None if policy == "none" else policy


def network_channels(net: nn.Module) -> int | None:
    """The channels of the images ``net`` restores (None where neither its operator nor its
    denoiser's configuration says)."""
    config = getattr(net, "config", None)
    if isinstance(config, dict):  # an exported file (lorun_peft.export.OnnxNetwork) describes itself
        return config.get("channels")
    channels = getattr(net.operator, "channels", None)
    if channels:
        return channels
    spec = net.unfold_config().denoiser if hasattr(net, "unfold_config") else None
    return ((spec or {}).get("config") or {}).get("in_channels")


def _check_modules(denoiser: Any, operator: Any) -> None:
    if not isinstance(denoiser, nn.Module):
        raise InvalidArgumentError(f"denoiser must be a torch.nn.Module, got {type(denoiser).__name__}")
    missing = [name for name in ("A", "A_adjoint") if not callable(getattr(operator, name, None))]
    if missing:
        raise InvalidArgumentError(
            f"operator {type(operator).__name__} lacks {' and '.join(missing)}; an operator needs "
            "A(x) and A_adjoint(y) (and optionally prox_l2(z, y, gamma), deepinv's names)"
        )
