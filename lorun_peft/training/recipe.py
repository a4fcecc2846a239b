"""Two-phase training: the fast recipe (pretrained base, then adapters) or the paper's Algorithm 1.

A network built with ``share="base"`` (one shared denoiser) goes through two phases, each
resumable on its own (checkpoints in ``checkpoint_dir/<phase>``):

- ``RECIPE = ("denoiser", "adapters")``, the default: phase "denoiser" pretrains the shared
  denoiser as a noise-level-conditioned Gaussian denoiser (:func:`lorun_peft.training.pretrain.train_denoiser`,
  one denoiser call per sample instead of K, so about K times more samples per CPU-second), then
  picks the steps' initialisation for it on the validation images
  (:func:`lorun_peft.training.pretrain.choose_noise_schedule`); phase "adapters" freezes it (``to_lora``)
  and trains the K adapters, the steps and any learnable operator state. This is how the
  pretrained zoo was trained (benchmarks/RESULTS.md measures it against the paper's way).
- ``PAPER = ("backbone", "adapters")``: Algorithm 1 of the LoRun paper: phase "backbone" trains
  Block-1 unfolded end to end, then ``to_lora`` and phase "adapters".

>>> import torch
>>> from lorun_peft import unfold
>>> from lorun_peft.denoisers import UNet
>>> from lorun_peft.operators import BlockCS
>>> net = unfold(UNet(1, width=4, depth=1), BlockCS(0.25, block=8), K=2, share="base", noise_level=True)
>>> result = train_two_phase(net, torch.rand(8, 1, 16, 16), steps=2, batch_size=2, progress=False)
>>> net.share, len(result.denoiser.losses), len(result.adapters.losses)
('lora', 2, 2)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import InvalidArgumentError
from .evaluation import Evaluation, evaluate
from .pretrain import choose_noise_schedule, train_denoiser
from .batches import Images
from .checkpoints import TrainResult
from .loop import train

__all__ = ["train_two_phase", "TwoPhaseResult", "RECIPE", "PAPER", "PHASES"]

RECIPE = ("denoiser", "adapters")
PAPER = ("backbone", "adapters")
PHASES = ("denoiser", "backbone", "adapters")  # every phase, in the order they may run


@dataclass
class TwoPhaseResult:
    """Each phase's training result (None where skipped), the step initialisation chosen after
    phase "denoiser" (None without validation images), and the evaluations after each phase."""

    denoiser: TrainResult | None = None
    backbone: TrainResult | None = None
    adapters: TrainResult | None = None
    schedule: dict[str, Any] | None = None
    backbone_evaluation: Evaluation | None = None
    evaluation: Evaluation | None = None


def _check_phases(net: torch.nn.Module, phases: tuple[str, ...]) -> None:
    if not phases or any(p not in PHASES for p in phases) or len(set(phases)) != len(phases):
        raise InvalidArgumentError(f"phases must be a non-empty subset of {PHASES}, got {phases!r}")
    if list(phases) != sorted(phases, key=PHASES.index):
        raise InvalidArgumentError(f"phases run in the order {PHASES}, got {phases!r}")
    share = getattr(net, "share", None)
    first = [p for p in phases if p != "adapters"]
    if first and share != "base":
        raise InvalidArgumentError(f"phase {first[0]!r} trains a share='base' (Block-1) network; this one has share={share!r}")
    if "denoiser" in phases and not getattr(net, "noise_level", False):
        raise InvalidArgumentError(
            "phase 'denoiser' pretrains a noise-level-conditioned denoiser D(x, sigma): build the network with "
            "unfold(..., noise_level=True), or train with phases=PAPER"
        )
    if phases == ("adapters",) and share not in ("base", "lora"):
        raise InvalidArgumentError(f"phase 'adapters' needs a share='base' or 'lora' network, got share={share!r}")


def train_two_phase(
    net: torch.nn.Module,
    data: Images,
    *,
    steps: int,
    adapter_steps: int | None = None,
    lr: float = 1e-3,
    adapter_lr: float | None = None,
    gamma: float | None = None,
    phases: Sequence[str] = RECIPE,
    test_data: Images | None = None,
    checkpoint_dir: str | Path | None = None,
    seed: int = 0,
    keep_outputs: bool = False,
    sigma_max: float = 50 / 255,
    **options: Any,
) -> TwoPhaseResult:
    """Train a ``share="base"`` network in place through ``phases`` (see the module docstring).

    The first phase ("denoiser" or "backbone") runs ``steps`` steps at ``lr``; then
    ``net.to_lora(gamma)`` freezes the denoiser and adds K adapters (initialised under ``seed``,
    so a rerun builds the same ones) and phase "adapters" trains them for ``adapter_steps``
    (default ``steps``) at ``adapter_lr`` (default ``lr``). "denoiser" draws noise levels up to
    ``sigma_max``; when ``val_data`` is given it reports denoising PSNR at sigma 25/255 on it and
    then sets the steps by ``choose_noise_schedule`` on it. ``phases`` may name one phase;
    "adapters" alone also accepts a network that is already LoRun. An interrupted run resumes in
    the phase where it stopped. With ``test_data``
    each unfolded phase ends with ``evaluate`` (``keep_outputs``: keep the restored images).
    Other keyword arguments go to :func:`lorun_peft.train` (batch_size, noise_sigma, val_data,
    val_every, checkpoint_every, resume, progress, accelerator, precision, ...); the "denoiser"
    phase takes batch_size, checkpoint_every, resume, progress and val_data of them (it runs in float32).
    """
    phases = tuple(phases)
    _check_phases(net, phases)
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    result = TwoPhaseResult()
    noise_sigma = options.get("noise_sigma", 0.0)
    val_data = options.get("val_data")
    if "denoiser" in phases:
        result.denoiser = train_denoiser(
            net.denoisers.denoiser, data, steps=steps, lr=lr, seed=seed, sigma_max=sigma_max,
            batch_size=options.get("batch_size", 4), checkpoint_dir=folder / "denoiser" if folder else None,
            checkpoint_every=options.get("checkpoint_every", 0), resume=options.get("resume", True),
            progress=options.get("progress", True), val_data=val_data, val_every=options.get("val_every", 0),
        )
        if val_data is not None:
            result.schedule = choose_noise_schedule(net, val_data)
    if "backbone" in phases:
        result.backbone = train(
            net, data, steps=steps, lr=lr, seed=seed, desc="backbone",
            checkpoint_dir=folder / "backbone" if folder else None, **options,
        )
    if (result.denoiser or result.backbone) and test_data is not None:
        result.backbone_evaluation = evaluate(net, test_data, noise_sigma=noise_sigma, seed=seed, keep_outputs=keep_outputs)
    if "adapters" in phases:
        if net.share == "base":
            with torch.random.fork_rng():  # adapter init from `seed`; the global RNG is left as it was
                torch.manual_seed(seed)
                net.to_lora(gamma)
        result.adapters = train(
            net, data, steps=adapter_steps or steps, lr=adapter_lr or lr, seed=seed + 1, desc="adapters",
            checkpoint_dir=folder / "adapters" if folder else None, **options,
        )
        if test_data is not None:
            result.evaluation = evaluate(net, test_data, noise_sigma=noise_sigma, seed=seed, keep_outputs=keep_outputs)
    return result
