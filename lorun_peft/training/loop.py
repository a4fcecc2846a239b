"""Train an unfolded network for one phase with the paper's L2 loss (Algorithm 1).

``train``: measurements are simulated on the fly from clean images by the network's own operator
(so a learnable sampling matrix is trained jointly). Adam over every parameter with requires_grad
(in LoRun mode: the K adapters, the step parameters and any learnable operator state), cosine
learning rate, validation PSNR every ``val_every`` steps. Checkpoints are written atomically;
``resume=True`` continues exactly where a run stopped: the sampling order, the random patches of a
dataset and the noise all come from one seeded generator saved in the checkpoint. Measuring a
trained network is :mod:`lorun_peft.training.evaluation`'s job.

Multi-device: under ``accelerate launch`` (or torchrun) ``train`` creates an
``accelerate.Accelerator`` by itself and runs DDP on every process, with mixed precision if the
launch asked for it; ``batch_size`` is per process and the processes split one global batch,
so N processes with batch b train like one process with batch N * b.

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

import copy
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..errors import CorruptFileError, IncompatibleBundleError, InvalidArgumentError, TrainingError, check_int
from ..persistence.atomic import atomic_write
from ..metrics import psnr
from ..operators.base import fit_operator
from ..unfold import measure_and_restore

__all__ = ["train", "fit_operator", "restore", "image_list", "due", "Source", "save_checkpoint", "load_checkpoint", "TrainResult",
           "CHECKPOINT_NAME", "PRECISIONS"]

CHECKPOINT_NAME = "checkpoint.pt"
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}  # the forward pass's autocast dtype

Images = torch.Tensor | Sequence[torch.Tensor] | Dataset


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
def train(
    net: torch.nn.Module,
    data: Images,
    *,
    steps: int,
    lr: float = 1e-3,
    operator_lr: float | None = None,
    batch_size: int = 4,
    noise_sigma: float = 0.0,
    schedule: str = "cosine",
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 0,
    resume: bool = True,
    progress: bool = True,
    time_limit: float | None = None,
    val_data: Images | None = None,
    val_every: int = 0,
    clip_grad_norm: float | None = None,
    accelerator: Any = None,
    precision: str = "fp32",
    desc: str = "train",
) -> TrainResult:
    """Train ``net`` on clean images ``data`` for ``steps`` steps.

    ``data``: a N x C x H x W tensor, a sequence of equal-shaped C x H x W tensors, or a torch
    Dataset whose items are C x H x W tensors (for example ``ImageFolder(..., patch_size=64)``;
    a dataset with ``random_item(index, generator)`` gets its random patches from the training
    generator, so resume stays exact). ``schedule`` is "cosine" (to zero over ``steps``) or
    "constant". ``operator_lr``: the learning rate of the operator's trainable parameters (a
    sampling matrix, say; default ``lr``); after every step an operator with a ``project_()``
    method is projected back onto its constraints (``BlockCS(orthonormal=True)``: orthonormal
    rows). ``time_limit``: stop after this many seconds in this call (checkpointed, if
    ``checkpoint_dir``, so that the next call resumes; ``result.step < steps`` says it stopped
    early). With ``checkpoint_dir``, a checkpoint is written every ``checkpoint_every``
    steps (0: only at the end) and, if ``resume``, an existing one is continued from. A NaN/Inf
    loss raises TrainingError and keeps the last good checkpoint. ``val_data`` (images of any
    sizes the operator accepts) is restored every ``val_every`` steps and at the end; the mean
    PSNR goes to the progress bar and ``result.val_psnr``. ``accelerator``: an
    ``accelerate.Accelerator``, True (create one), False (never), or None (create one only when
    launched by ``accelerate launch`` / torchrun). ``precision`` "bf16" or "fp16" runs the
    network's forward pass under ``torch.autocast`` (fp16 with a gradient scaler, kept in the
    checkpoint); weights, optimizer and loss stay float32. Under accelerate, its own mixed
    precision applies instead (``accelerate launch --mixed_precision bf16``).
    """
    source = Source(data)
    check_int(steps, "steps")
    check_int(batch_size, "batch_size")
    check_int(checkpoint_every, "checkpoint_every", 0)
    check_int(val_every, "val_every", 0)
    for name, value in (("lr", lr), ("operator_lr", lr if operator_lr is None else operator_lr)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise InvalidArgumentError(f"{name} must be a number > 0, got {value!r}")
    if schedule not in ("cosine", "constant"):
        raise InvalidArgumentError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
    if clip_grad_norm is not None and not clip_grad_norm > 0:
        raise InvalidArgumentError(f"clip_grad_norm must be None or > 0, got {clip_grad_norm!r}")
    if time_limit is not None and (isinstance(time_limit, bool) or not isinstance(time_limit, (int, float)) or not time_limit > 0):
        raise InvalidArgumentError(f"time_limit must be None or a number of seconds > 0, got {time_limit!r}")
    if precision not in PRECISIONS:
        raise InvalidArgumentError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    val_images = image_list(val_data, "val_data") if val_data is not None else None
    accelerator, owned = _resolve_accelerator(accelerator)
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    main = rank == 0
    if accelerator is not None and precision != "fp32":
        raise InvalidArgumentError(f"precision={precision!r} with accelerate: set it with `accelerate launch --mixed_precision {precision}`")

    params = [p for p in net.parameters() if p.requires_grad]
    if not params:
        raise InvalidArgumentError("the network has no trainable parameter (requires_grad is False everywhere)")
    operator_params = {id(p) for p in net.operator.parameters()} if operator_lr is not None else set()
    groups = [{"params": [p for p in params if id(p) not in operator_params], "lr": lr},
              {"params": [p for p in params if id(p) in operator_params], "lr": operator_lr}]
    optimizer = torch.optim.Adam([g for g in groups if g["params"]])
    project = getattr(net.operator, "project_", None)
    cosine = lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, steps) / steps))  # noqa: E731
    # The scheduler is stepped here once per step (accelerate's wrapper would step it per process).
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine if schedule == "cosine" else lambda s: 1.0)
    model = net
    if accelerator is not None:
        model, optimizer = accelerator.prepare(net, optimizer)
    reference = next(net.parameters())
    device, dtype = reference.device, reference.dtype
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    generator = torch.Generator().manual_seed(seed)
    result = TrainResult()
    path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    if path is not None and resume and path.exists():
        result = load_checkpoint(path, net, optimizer, scheduler, generator, accelerator, (batch_size, world), scaler)

    start = time.perf_counter()
    model.train()
    bar = tqdm(total=steps, initial=result.step, disable=not (progress and main), desc=desc, unit="step")
    postfix: dict[str, str] = {}
    while result.step < steps:
        tick = time.perf_counter()
        x = source.batch(generator, batch_size, rank, world).to(device=device, dtype=dtype)
        with fit_operator(net.operator, x.shape[-2:]):
            y = net.operator.A(x)
            if noise_sigma:
                noise = torch.randn((batch_size * world, *y.shape[1:]), generator=generator, dtype=y.dtype)
                y = y + noise_sigma * noise[rank * batch_size : (rank + 1) * batch_size].to(y.device)
            with torch.autocast(device.type, dtype=PRECISIONS[precision], enabled=precision != "fp32"):
                restored = model(y)
            loss = F.mse_loss(restored.float(), x.float())
        reported = accelerator.reduce(loss.detach(), reduction="mean") if world > 1 else loss.detach()
        if not torch.isfinite(reported):
            where = f"; the last good checkpoint is {result.checkpoint}" if result.checkpoint else ""
            raise TrainingError(f"loss became {reported.item()} at step {result.step + 1} (try a lower lr){where}")
        optimizer.zero_grad(set_to_none=True)
        if accelerator is not None:
            accelerator.backward(loss)
            if clip_grad_norm:
                accelerator.clip_grad_norm_(params, clip_grad_norm)
        elif scaler is not None:  # fp16: scaled gradients, unscaled before clipping; steps with Inf/NaN skipped
            scaler.scale(loss).backward()
            if clip_grad_norm:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
        else:
            loss.backward()
            if clip_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if project is not None:
            project()
        scheduler.step()
        result.step += 1
        result.losses.append(reported.item())
        result.train_seconds += time.perf_counter() - tick
        postfix.update(loss=f"{result.losses[-1]:.3g}", psnr=f"{-10 * math.log10(max(result.losses[-1], 1e-12)):.2f}")
        if val_images and due(result.step, steps, val_every):
            result.val_psnr.append((result.step, _validate(net, val_images, noise_sigma, seed)))
            result.val_seconds.append(result.train_seconds)
            postfix["val_psnr"] = f"{result.val_psnr[-1][1]:.2f}"
            model.train()
        bar.set_postfix(postfix, refresh=False)
        bar.update(1)
        out_of_time = time_limit is not None and time.perf_counter() - start >= time_limit
        if world > 1 and time_limit is not None:  # every process stops at the same step
            out_of_time = bool(accelerator.reduce(torch.tensor(float(out_of_time), device=device), reduction="sum") > 0)
        if path is not None and (due(result.step, steps, checkpoint_every) or out_of_time):
            if main:
                save_checkpoint(path, net, optimizer, scheduler, generator, result, accelerator, (batch_size, world), scaler)
            if accelerator is not None:
                accelerator.wait_for_everyone()
            result.checkpoint = path
        if out_of_time:
            break
    bar.close()
    result.seconds = time.perf_counter() - start
    if owned and accelerator is not None:
        accelerator.free_memory()  # drop the DDP wrapper; the next phase prepares the changed net
    return result


def due(step: int, steps: int, every: int) -> bool:
    """Whether something done "every ``every`` steps and at the end" is due after ``step`` of ``steps``."""
    return step == steps or bool(every and step % every == 0)


class Source:
    """Draws training batches from a tensor or a dataset; all randomness from one generator."""

    def __init__(self, data: Images) -> None:
        self.dataset: Dataset | None = None
        if isinstance(data, Dataset) and not isinstance(data, torch.Tensor):
            if len(data) == 0:  # type: ignore[arg-type]
                raise InvalidArgumentError("data is an empty dataset")
            self.dataset, self.size = data, len(data)  # type: ignore[arg-type]
        else:
            self.images = _as_image_tensor(data)
            self.size = len(self.images)

    def batch(self, generator: torch.Generator, batch_size: int, rank: int, world: int) -> torch.Tensor:
        """This process's slice of one global batch of ``batch_size * world`` images."""
        index = torch.randint(self.size, (batch_size * world,), generator=generator)
        mine = slice(rank * batch_size, (rank + 1) * batch_size)
        if self.dataset is None:
            return self.images[index[mine]]
        random_item = getattr(self.dataset, "random_item", None)
        if random_item is not None:
            seeds = torch.randint(2**62, (batch_size * world,), generator=generator)[mine].tolist()
            items = [random_item(int(i), torch.Generator().manual_seed(s)) for i, s in zip(index[mine].tolist(), seeds)]
        else:
            items = [self.dataset[int(i)] for i in index[mine].tolist()]
        items = [item[0] if isinstance(item, (tuple, list)) else item for item in items]
        return _stack_items(items, index[mine].tolist())


def _stack_items(items: list[Any], indices: list[int]) -> torch.Tensor:
    for i, item in zip(indices, items):
        if not isinstance(item, torch.Tensor) or item.dim() != 3 or not item.is_floating_point():
            what = f"{tuple(item.shape)} {item.dtype}" if isinstance(item, torch.Tensor) else type(item).__name__
            raise InvalidArgumentError(f"dataset item {i} must be a floating-point C x H x W tensor, got {what}")
        if not bool(torch.isfinite(item).all()):
            raise InvalidArgumentError(f"dataset item {i} holds NaN or Inf")
    shapes = {tuple(item.shape) for item in items}
    if len(shapes) > 1:
        raise InvalidArgumentError(
            f"dataset items have different shapes {sorted(shapes)}; give the dataset a patch_size (random crops)"
        )
    return torch.stack(items)


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


def image_list(images: Images, what: str) -> list[torch.Tensor]:
    """Whole images (C x H x W) from a tensor, a sequence or a dataset (its ``full`` items if any)."""
    if isinstance(images, torch.Tensor):
        if images.dim() != 4:
            raise InvalidArgumentError(f"{what} must be N x C x H x W, got shape {tuple(images.shape)}")
        out = list(images)
    elif isinstance(images, Dataset):
        full = getattr(images, "full", None)
        out = [full(i) if full else images[i] for i in range(len(images))]  # type: ignore[arg-type]
        out = [item[0] if isinstance(item, (tuple, list)) else item for item in out]
    else:
        out = list(images)
    if not out:
        raise InvalidArgumentError(f"{what} holds no image")
    for i, x in enumerate(out):
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or not x.is_floating_point():
            raise InvalidArgumentError(f"{what}: image {i} must be a floating-point C x H x W tensor")
    return out


def restore(
    net: torch.nn.Module, x: torch.Tensor, noise_sigma: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Simulate y for one image batch x, then (x0, x_hat, per-stage outputs), all clamped to [0, 1]
    (:func:`lorun_peft.unfold.measure_and_restore`, clamped)."""
    _, x0, x_hat, stages = measure_and_restore(net, x, noise_sigma, generator)
    return x0.clamp(0, 1), x_hat.clamp(0, 1), [s.clamp(0, 1) for s in stages]


@torch.no_grad()
def _validate(net: torch.nn.Module, images: list[torch.Tensor], noise_sigma: float, seed: int) -> float:
    net.eval()
    reference = next(net.parameters())
    generator = torch.Generator().manual_seed(seed + 12345)  # the same noise at every validation
    values = []
    for x in images:
        x = x.to(device=reference.device, dtype=reference.dtype)[None]
        _, x_hat, _ = restore(net, x, noise_sigma, generator)
        values.append(float(psnr(x_hat, x)))
    return sum(values) / len(values)


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


_AUTO_ACCELERATOR: Any = None


def launched_by_accelerate() -> bool:
    """True inside ``accelerate launch`` (it sets ACCELERATE_MIXED_PRECISION / ACCELERATE_USE_CPU)
    or any torch.distributed launcher with more than one process (WORLD_SIZE > 1)."""
    env = os.environ
    return "ACCELERATE_MIXED_PRECISION" in env or "ACCELERATE_USE_CPU" in env or int(env.get("WORLD_SIZE", "1") or 1) > 1


def _resolve_accelerator(accelerator: Any) -> tuple[Any, bool]:
    """(the Accelerator to use or None, whether it was created here)."""
    global _AUTO_ACCELERATOR
    if accelerator is False or (accelerator is None and not launched_by_accelerate()):
        return None, False
    if accelerator is not None and accelerator is not True:
        return accelerator, False
    if _AUTO_ACCELERATOR is None:
        try:
            from accelerate import Accelerator
        except ImportError as err:
            raise ImportError("multi-device training needs Hugging Face Accelerate: pip install accelerate") from err
        _AUTO_ACCELERATOR = Accelerator()
    return _AUTO_ACCELERATOR, True
