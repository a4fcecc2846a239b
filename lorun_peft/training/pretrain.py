"""Pretrain a shared base denoiser as a noise-level-conditioned Gaussian denoiser.

The LoRun paper's premise is one pretrained base shared by every stage. Training it as a plain
denoiser costs one denoiser call per sample instead of K (unfolded training), so on a CPU it
sees about K times more samples per second; the unfolded network then only trains its
adapters, step parameters and operator over the frozen base (``unfold(base, op, K)``).

:func:`choose_noise_schedule` then picks the unfolded network's step initialisation for that
base on validation images (under a pretrained denoiser the default sigma_k = 0.5 erases the image).

Each step draws clean patches x, a noise level sigma per sample (uniform in
[sigma_min, sigma_max]) and minimises ||D(x + sigma n, sigma) - x||^2. Checkpoints and exact
resume work as in :func:`lorun_peft.train` (one seeded generator drives patches, noise and
sigma).

>>> import torch
>>> from lorun_peft.denoisers import UNet
>>> result = train_denoiser(UNet(1, width=4, depth=1), torch.rand(4, 1, 16, 16), steps=2, batch_size=2, progress=False)
>>> len(result.losses)
2
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..adapters.sharing import inference_engine
from ..errors import InvalidArgumentError, TrainingError, check_int, check_number
from .evaluation import evaluate
from ..metrics import psnr
from ..steps import geometric
from .batches import Images, Source, due, image_list
from .checkpoints import CHECKPOINT_NAME, TrainResult, load_checkpoint, save_checkpoint

__all__ = ["train_denoiser", "denoise_psnr", "choose_noise_schedule", "SIGMA_FIRST", "SIGMA_LAST"]

# The grid choose_noise_schedule searches: sigma_0 and sigma_{K-1} of a geometric schedule.
SIGMA_FIRST = (0.15, 0.08, 0.04, 0.02)
SIGMA_LAST = (0.02, 0.01, 0.005)


def train_denoiser(
    denoiser: nn.Module,
    data: Images,
    *,
    steps: int,
    sigma_max: float = 50 / 255,
    sigma_min: float = 0.0,
    lr: float = 1e-3,
    batch_size: int = 16,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 0,
    resume: bool = True,
    progress: bool = True,
    time_limit: float | None = None,
    val_data: Images | None = None,
    val_sigma: float = 25 / 255,
    val_every: int = 0,
) -> TrainResult:
    """Train ``denoiser(x, sigma)`` (sigma a per-sample tensor) to remove Gaussian noise.

    ``data`` is what :func:`lorun_peft.train` takes (a tensor or a dataset of patches). Adam with
    a cosine learning rate over ``steps``; ``val_data`` is denoised at ``val_sigma`` every
    ``val_every`` steps and at the end (mean PSNR in ``result.val_psnr``). ``time_limit``: stop
    after this many seconds in this call, checkpointed so that the next call resumes.
    """
    check_int(steps, "steps")
    check_int(batch_size, "batch_size")
    if not 0 <= sigma_min <= sigma_max:
        raise InvalidArgumentError(f"need 0 <= sigma_min <= sigma_max, got {sigma_min!r} and {sigma_max!r}")
    check_number(lr, "lr")
    if time_limit is not None:
        check_number(time_limit, "time_limit")
    if not isinstance(denoiser, nn.Module):
        raise InvalidArgumentError(f"denoiser must be a torch.nn.Module, got {type(denoiser).__name__}")
    source = Source(data)
    val_images = image_list(val_data, "val_data") if val_data is not None else None
    params = [p for p in denoiser.parameters() if p.requires_grad]
    if not params:
        raise InvalidArgumentError("the denoiser has no trainable parameter")
    optimizer = torch.optim.Adam(params, lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    reference = params[0]
    generator = torch.Generator().manual_seed(seed)
    path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    result = TrainResult()
    if path is not None and resume and path.exists():
        result = load_checkpoint(path, denoiser, optimizer, scheduler, generator)

    start = time.perf_counter()
    denoiser.train()
    bar = tqdm(total=steps, initial=result.step, disable=not progress, desc="denoiser", unit="step")
    while result.step < steps:
        x = source.batch(generator, batch_size, 0, 1)
        sigma = sigma_min + (sigma_max - sigma_min) * torch.rand(batch_size, generator=generator)
        noisy = x + sigma.view(-1, 1, 1, 1) * torch.randn(x.shape, generator=generator)
        noisy, x, sigma = (t.to(device=reference.device, dtype=reference.dtype) for t in (noisy, x, sigma))
        loss = F.mse_loss(denoiser(noisy, sigma), x)
        if not torch.isfinite(loss):
            raise TrainingError(f"loss became {loss.item()} at step {result.step + 1} (try a lower lr)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        result.step += 1
        result.losses.append(loss.item())
        postfix = {"loss": f"{result.losses[-1]:.3g}"}
        if val_images and due(result.step, steps, val_every):
            result.val_psnr.append((result.step, denoise_psnr(denoiser, val_images, val_sigma, seed)))
            postfix["val_psnr"] = f"{result.val_psnr[-1][1]:.2f}"
            denoiser.train()
        bar.set_postfix(postfix, refresh=False)
        bar.update(1)
        out_of_time = time_limit is not None and time.perf_counter() - start >= time_limit
        if path is not None and (due(result.step, steps, checkpoint_every) or out_of_time):
            save_checkpoint(path, denoiser, optimizer, scheduler, generator, result, None, (batch_size, 1))
            result.checkpoint = path
        if out_of_time:
            break
    bar.close()
    result.seconds = time.perf_counter() - start
    denoiser.eval()
    return result


@torch.no_grad()
def denoise_psnr(denoiser: nn.Module, images: Images, sigma: float, seed: int = 0) -> float:
    """Mean PSNR of ``denoiser`` on ``images`` with Gaussian noise of level ``sigma`` (fixed seed).

    >>> import torch
    >>> identity = lambda x, sigma: x
    >>> round(denoise_psnr(identity, torch.full((1, 1, 64, 64), 0.5), 0.1))   # the noisy input: 20 dB
    20
    """
    items = image_list(images, "images")
    generator = torch.Generator().manual_seed(seed + 4321)
    was_training = isinstance(denoiser, nn.Module) and denoiser.training
    reference = next(denoiser.parameters(), None) if isinstance(denoiser, nn.Module) else None
    if was_training:
        denoiser.eval()
    values = []
    for x in items:
        x = x[None] if reference is None else x[None].to(device=reference.device, dtype=reference.dtype)
        noisy = x + sigma * torch.randn(x.shape, generator=generator).to(x)
        out = denoiser(noisy, torch.full((1,), sigma, dtype=x.dtype, device=x.device))
        values.append(float(psnr(out.clamp(0, 1), x)))
    if was_training:
        denoiser.train()
    return sum(values) / len(values)


@torch.no_grad()
@inference_engine("eager")  # a handful of small restores: preparing an engine would not pay
def choose_noise_schedule(
    net: nn.Module,
    images: Images,
    *,
    step: float = 1.0,
    firsts: tuple[float, ...] = SIGMA_FIRST,
    lasts: tuple[float, ...] = SIGMA_LAST,
    noise_sigma: float = 0.0,
) -> dict[str, Any]:
    """Set ``net``'s steps to step size ``step`` and the geometric noise schedule (sigma_0 ->
    sigma_{K-1}, from the grid ``firsts`` x ``lasts``, falling) that restores ``images`` best,
    untrained (plug-and-play), from measurements with noise of ``noise_sigma`` (the same draws for
    every point of the grid). Use validation images, never test images. Returns the choice
    (``sigma_first``, ``sigma_last``, ``psnr``) and every score (``grid``).

    >>> import torch
    >>> from lorun_peft import unfold
    >>> from lorun_peft.denoisers import UNet
    >>> from lorun_peft.operators import BlockCS
    >>> net = unfold(UNet(1, width=4, depth=1), BlockCS(0.5, block=8), K=3, noise_level=True)
    >>> choice = choose_noise_schedule(net, torch.rand(2, 1, 16, 16), firsts=(0.1,), lasts=(0.01, 0.02))
    >>> sorted(choice["grid"])
    ['0.1-0.01', '0.1-0.02']
    """
    K = net.K  # noqa: N806
    scores: dict[tuple[float, float], float] = {}
    for first in firsts:
        for last in (v for v in lasts if v <= first):
            net.steps.initialise(step=step, sigma=geometric(first, last, K))
            scores[(first, last)] = evaluate(net, images, noise_sigma=noise_sigma).mean()["psnr"]
    if not scores:
        raise InvalidArgumentError(f"no falling schedule in the grid firsts={firsts} x lasts={lasts}")
    first, last = max(scores, key=scores.__getitem__)
    net.steps.initialise(step=step, sigma=geometric(first, last, K))
    return {"step": step, "sigma_first": first, "sigma_last": last, "psnr": scores[(first, last)],
            "grid": {f"{a}-{b}": round(v, 3) for (a, b), v in scores.items()}}
