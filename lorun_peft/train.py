"""Train an unfolded network end to end with the paper's L2 loss.

Measurements are simulated on the fly from clean images by the network's own operator (so a
learnable sampling matrix is trained jointly). Adam over every parameter with requires_grad: in
LoRun mode that is the K adapters, the step parameters and any learnable operator state.
Checkpoints are written atomically; ``resume=True`` continues exactly where a run stopped (the
sampling order and noise come from one seeded generator saved in the checkpoint).

>>> import torch
>>> from torch import nn
>>> from lorun_peft import unfold
>>> from lorun_peft.operators import BlockCS
>>> net = unfold(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1)), BlockCS(0.25, block=8), K=2)
>>> result = train(net, torch.rand(8, 1, 16, 16), steps=3, batch_size=2, progress=False)
>>> len(result.losses)
3
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .errors import IncompatibleBundleError, InvalidArgumentError, TrainingError
from .io import atomic_write

__all__ = ["train", "TrainResult", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class TrainResult:
    """What a training run did: the loss of every step and where the last checkpoint is."""

    losses: list[float] = field(default_factory=list)
    step: int = 0
    checkpoint: Path | None = None


def train(
    net: torch.nn.Module,
    data: torch.Tensor | Sequence[torch.Tensor],
    *,
    steps: int,
    lr: float = 1e-3,
    batch_size: int = 4,
    noise_sigma: float = 0.0,
    schedule: str = "cosine",
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 0,
    resume: bool = True,
    progress: bool = True,
) -> TrainResult:
    """Train ``net`` on clean images ``data`` (a N x C x H x W tensor or a sequence of C x H x W).

    ``schedule`` is "cosine" (to zero over ``steps``) or "constant". With ``checkpoint_dir``,
    a checkpoint is written every ``checkpoint_every`` steps (0: only at the end) and, if
    ``resume``, an existing one is continued from. A NaN/Inf loss raises TrainingError and keeps
    the last good checkpoint.
    """
    images = _as_image_tensor(data)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InvalidArgumentError(f"steps must be an int >= 1, got {steps!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if not lr > 0:
        raise InvalidArgumentError(f"lr must be > 0, got {lr!r}")
    if schedule not in ("cosine", "constant"):
        raise InvalidArgumentError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
    reference = next(net.parameters())
    images = images.to(dtype=reference.dtype, device=reference.device)

    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    cosine = lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, steps) / steps))  # noqa: E731
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine if schedule == "cosine" else lambda s: 1.0)
    generator = torch.Generator().manual_seed(seed)
    result = TrainResult()
    path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    if path is not None and resume and path.exists():
        result = _load_checkpoint(path, net, optimizer, scheduler, generator)

    net.train()
    bar = tqdm(total=steps, initial=result.step, disable=not progress, desc="train", unit="step")
    while result.step < steps:
        index = torch.randint(len(images), (batch_size,), generator=generator)
        x = images[index]
        y = net.operator.A(x)
        if noise_sigma:
            y = y + noise_sigma * torch.randn(y.shape, generator=generator, dtype=y.dtype).to(y.device)
        loss = F.mse_loss(net(y), x)
        if not torch.isfinite(loss):
            where = f"; the last good checkpoint is {result.checkpoint}" if result.checkpoint else ""
            raise TrainingError(f"loss became {loss.item()} at step {result.step + 1} (try a lower lr){where}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        result.step += 1
        result.losses.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3g}", psnr=f"{-10 * math.log10(max(loss.item(), 1e-12)):.2f}")
        if path is not None and (result.step == steps or (checkpoint_every and result.step % checkpoint_every == 0)):
            _save_checkpoint(path, net, optimizer, scheduler, generator, result)
            result.checkpoint = path
    bar.close()
    return result


def _as_image_tensor(data: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    if isinstance(data, torch.Tensor):
        images = data
    else:
        try:
            images = torch.stack([torch.as_tensor(item) for item in data])
        except (RuntimeError, TypeError) as err:
            raise InvalidArgumentError(f"data must be a N x C x H x W tensor or a sequence of equal-shaped C x H x W tensors: {err}") from err
    if images.dim() != 4 or len(images) == 0:
        raise InvalidArgumentError(f"data must be a non-empty N x C x H x W batch of clean images, got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise InvalidArgumentError(f"data must be floating point (images scaled to [0, 1]), got {images.dtype}")
    bad = (~torch.isfinite(images)).flatten(1).any(1).nonzero().flatten().tolist()
    if bad:
        raise InvalidArgumentError(f"data holds NaN or Inf in image(s) {bad[:10]}")
    return images


def _save_checkpoint(path: Path, net, optimizer, scheduler, generator, result: TrainResult) -> None:
    state = {
        "model": net.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "generator": generator.get_state(),
        "step": result.step,
        "losses": list(result.losses),
    }
    with atomic_write(path) as f:
        torch.save(state, f)


def _load_checkpoint(path: Path, net, optimizer, scheduler, generator) -> TrainResult:
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
        model_state = state["model"]
        expected = net.state_dict()
    except Exception as err:  # noqa: BLE001 - any unreadable file is reported the same way
        from .errors import CorruptFileError

        raise CorruptFileError(f"checkpoint {path} cannot be read: {err}") from err
    mismatched = sorted(set(model_state) ^ set(expected)) or [
        k for k in expected if tuple(model_state[k].shape) != tuple(expected[k].shape)
    ]
    if mismatched:
        raise IncompatibleBundleError(f"checkpoint {path} does not fit this network (keys/shapes differ: {mismatched[:5]})")
    net.load_state_dict(model_state)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    generator.set_state(state["generator"])
    return TrainResult(losses=list(state["losses"]), step=int(state["step"]), checkpoint=path)
