"""Resumable training checkpoints: :func:`save_checkpoint` writes weights, optimizer, scheduler,
generator and history atomically (tensors only); :func:`load_checkpoint` restores all of it or
nothing (``weights_only=True``) and returns the :class:`TrainResult` history."""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import CorruptFileError, IncompatibleBundleError
from ..persistence.atomic import atomic_write

__all__ = ["CHECKPOINT_NAME", "TrainResult", "save_checkpoint", "load_checkpoint"]

CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class TrainResult:
    """What a training run did: the loss of every step, validation PSNR as (step, dB) pairs,
    where the last checkpoint is and the seconds spent in this call. ``train_seconds`` counts the
    optimisation time of every step so far, resumed runs included and validation excluded;
    ``val_seconds`` holds its value at each validation (for PSNR-against-time curves)."""

    losses: list[float] = field(default_factory=list)
    step: int = 0
    checkpoint: Path | None = None
    val_psnr: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0
    train_seconds: float = 0.0
    val_seconds: list[float] = field(default_factory=list)


# ------------------------------------------------------------------------------ one phase


def save_checkpoint(path: Path, net, optimizer, scheduler, generator, result: TrainResult, accelerator, layout, scaler=None) -> None:
    """Write a resumable checkpoint atomically (weights, optimizer, scheduler, generator, history; tensors only)."""
    state = {
        "model": net.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "generator": generator.get_state(),
        "step": result.step,
        "losses": list(result.losses),
        "val_psnr": [list(v) for v in result.val_psnr],
        "train_seconds": result.train_seconds,
        "val_seconds": list(result.val_seconds),
        "batch_size": layout[0],
        "processes": layout[1],
    }
    scaler = scaler or getattr(accelerator, "scaler", None)
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    with atomic_write(path) as f:
        torch.save(state, f)


def load_checkpoint(path: Path, net, optimizer, scheduler, generator, accelerator=None, layout=None, scaler=None) -> TrainResult:
    """Restore what :func:`save_checkpoint` wrote (``weights_only=True``), all or nothing; returns the history."""
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
        model_state = state["model"]
        expected = net.state_dict()
    except Exception as err:  # noqa: BLE001 - any unreadable file is reported the same way
        raise CorruptFileError(f"checkpoint {path} cannot be read: {err}") from err
    if not isinstance(model_state, dict) or not all(isinstance(v, torch.Tensor) for v in model_state.values()):
        raise CorruptFileError(f"checkpoint {path} holds no tensor state dict under 'model'")
    mismatched = sorted(set(model_state) ^ set(expected)) or [
        k for k in expected if tuple(model_state[k].shape) != tuple(expected[k].shape)
    ]
    if mismatched:
        raise IncompatibleBundleError(f"checkpoint {path} does not fit this network (keys/shapes differ: {mismatched[:5]})")
    saved_layout = (state.get("batch_size"), state.get("processes"))
    if layout is not None and saved_layout[0] is not None and tuple(saved_layout) != tuple(layout):
        warnings.warn(
            f"checkpoint {path} was written with batch_size {saved_layout[0]} on {saved_layout[1]} process(es), "
            f"this run uses {layout[0]} on {layout[1]}: it resumes, but not bit-exactly",
            stacklevel=3,
        )
    # Load everything or nothing: a damaged optimizer/scheduler part must not leave a half-resumed run.
    backup = (
        {k: v.detach().clone() for k, v in expected.items()},
        copy.deepcopy(optimizer.state_dict()),
        copy.deepcopy(scheduler.state_dict()),
        generator.get_state(),
    )
    try:
        net.load_state_dict(model_state)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        scaler = scaler or getattr(accelerator, "scaler", None)
        if scaler is not None and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        val = [(int(s), float(v)) for s, v in state.get("val_psnr", [])]
        return TrainResult(losses=[float(v) for v in state["losses"]], step=int(state["step"]), checkpoint=path, val_psnr=val,
                           train_seconds=float(state.get("train_seconds", 0.0)),
                           val_seconds=[float(v) for v in state.get("val_seconds", [])])
    except Exception as err:  # noqa: BLE001 - restore, then report the file as damaged
        net.load_state_dict(backup[0])
        optimizer.load_state_dict(backup[1])
        scheduler.load_state_dict(backup[2])
        generator.set_state(backup[3])
        raise CorruptFileError(f"checkpoint {path} is damaged ({type(err).__name__}: {err})") from err
