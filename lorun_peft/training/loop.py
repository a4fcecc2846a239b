"""Train an unfolded network for one phase with the paper's L2 loss (Algorithm 1).

``train``: measurements are simulated on the fly from clean images by the network's own operator
(so a learnable sampling matrix is trained jointly). Adam over every parameter with requires_grad
(in LoRun mode: the K adapters, the step parameters and any learnable operator state), cosine
learning rate, validation PSNR every ``val_every`` steps. Checkpoints are written atomically;
``resume=True`` continues exactly where a run stopped: the sampling order, the random patches of a
dataset and the noise all come from one seeded generator saved in the checkpoint. Batches come from
:mod:`.batches`, checkpoints are :mod:`.checkpoints`' job, and measuring a trained network is
:mod:`.evaluation`'s (their names are importable from here too, as they were).

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

import math
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..adapters.sharing import inference_engine
from ..errors import InvalidArgumentError, TrainingError, check_int, check_number
from ..metrics import psnr
from ..operators.base import fit_operator
from .batches import Images, Source, due, image_list
from .checkpoints import CHECKPOINT_NAME, TrainResult, load_checkpoint, save_checkpoint
from .evaluation import restore

__all__ = ["train", "fit_operator", "restore", "image_list", "due", "Source", "save_checkpoint", "load_checkpoint", "TrainResult",
           "CHECKPOINT_NAME", "PRECISIONS"]

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}  # the forward pass's autocast dtype

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
    check_number(lr, "lr")
    if operator_lr is not None:
        check_number(operator_lr, "operator_lr")
    if schedule not in ("cosine", "constant"):
        raise InvalidArgumentError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
    if clip_grad_norm is not None and not clip_grad_norm > 0:
        raise InvalidArgumentError(f"clip_grad_norm must be None or > 0, got {clip_grad_norm!r}")
    if time_limit is not None:
        check_number(time_limit, "time_limit")
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


@torch.no_grad()
@inference_engine("eager")  # the weights change between validations: nothing to prepare once
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
