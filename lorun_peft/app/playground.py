"""The engine behind ``lorun app``, without any web code: pick a task, give an image, restore it.

A base denoiser is loaded once; every task of that base is a bundle swapped into a live network
(:meth:`~lorun_peft.unfold.UnfoldedNetwork.load_adapters`: adapters, step parameters, operator). A
task whose unfolding differs gets a second live network around the same in-memory base, so the
base is never read again. A zoo whose families have their own bases (``base-<family>``) keeps the
other family's base and networks when switching, for a switch back. Inputs are checked
before any work (file size, image size, what the operator accepts) and every refusal is a
:class:`~lorun_peft.errors.LorunError` with a message for the page; nothing is changed on failure.

>>> play = Playground()
>>> print(play.select("cs-0.25"))  # doctest: +ELLIPSIS
loaded cs-0.25 ...
>>> result = play.restore(torch.rand(1, 64, 64))
>>> result.restored.shape, sorted(result.metrics)
((64, 64), ['initial PSNR (dB)', 'initial SSIM', 'restored PSNR (dB)', 'restored SSIM'])
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..persistence import _hub as hub
from .. import zoo
from ..config import UnfoldConfig
from ..data.images import load_image, photographs
from ..export.tiles import TiledNetwork, may_need_tiles, tiling_refusal
from ..errors import CorruptFileError, IncompatibleBundleError, InvalidArgumentError, LorunError
from ..data.colour import POLICY_TEXT
from ..metrics import psnr, rgb_to_y, shave, ssim
from ..resolve import load_network
from ..tasks import task_of
from ..persistence.reading import read_bundle
from ..persistence.schema import CONFIG_NAME, Bundle
from ..unfold import UnfoldedNetwork, colour_policy, measure_and_restore

__all__ = ["Limits", "Restoration", "Playground", "BUILT_IN"]

BUILT_IN = ("camera", "astronaut", "coffee", "chelsea", "brick", "clock")  # shipped photographs (data/photos)
DEGRADE, MEASUREMENT = "degrade", "measurement"


@dataclass(frozen=True)
class Limits:
    """What the page accepts: ``max_upload_mb`` per file, image sides in [``min_side``, ``max_side``] pixels."""

    max_upload_mb: float = 10.0
    max_side: int = 1024
    min_side: int = 16

    def __post_init__(self) -> None:
        if not self.max_upload_mb > 0 or not 0 < self.min_side <= self.max_side:
            raise InvalidArgumentError(f"limits need max_upload_mb > 0 and 0 < min_side <= max_side, got {self}")


@dataclass
class Restoration:
    """One restoration: H x W (or H x W x 3) arrays in [0, 1], PSNR/SSIM when the truth is known,
    per-stage outputs."""

    truth: np.ndarray | None
    initial: np.ndarray
    restored: np.ndarray
    stages: list[tuple[np.ndarray, str]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    colour: str = ""  # what was done to a colour image (lorun_peft.data.colour.POLICY_TEXT), "" for none


def _unfolding(config: dict) -> tuple[str, ...]:
    """What a bundle must share with a live network to swap into it (besides the base)."""
    return tuple(str(config[k]) for k in UnfoldConfig.SWAP_KEYS)


def _gray_if_equal(x: torch.Tensor) -> torch.Tensor:
    """One channel for an RGB image whose channels are equal (a gray photograph stored as colour)."""
    return x[:1] if x.shape[0] == 3 and bool((x == x[:1]).all()) else x


class Playground:
    """Live networks of the current base (other zoo families' kept), the task shown and the checks
    (see the module docstring)."""

    def __init__(self, limits: Limits = Limits(), allow_local: bool = False) -> None:
        self.limits, self.allow_local = limits, allow_local
        self.networks: dict[tuple, UnfoldedNetwork] = {}  # one per unfolding (K, algorithm, ...) of the base
        self.base: torch.nn.Module | None = None  # the plain base denoiser, when a bundle brought it
        self.base_origin = ""
        self.parked: dict[str, tuple[torch.nn.Module | None, dict[tuple, UnfoldedNetwork]]] = {}  # other zoo families'
        self.net: UnfoldedNetwork | None = None
        self.task = ""

    # ---- tasks ----------------------------------------------------------------------------
    @staticmethod
    def zoo_tasks() -> list[str]:
        """The pretrained zoo's bundles (empty when the package ships none)."""
        return zoo.list()

    def select(self, source: str, subfolder: str | None = None, revision: str | None = None) -> str:
        """Make ``source`` the live task: a zoo bundle name, a local folder (only with ``allow_local``:
        a bundle of the loaded base, or a saved network) or a Hub repo id (+ ``subfolder``,
        ``revision``). Returns what happened, with the swap time."""
        source = (source or "").strip()
        subfolder, revision = (subfolder or "").strip() or None, (revision or "").strip() or None
        if not source:
            raise InvalidArgumentError("choose a task: a zoo bundle, a Hub repo id or (with --allow-local) a folder")
        start = time.perf_counter()
        if source.removeprefix(zoo.PREFIX) in self.zoo_tasks():
            name = source.removeprefix(zoo.PREFIX)
            zoo.verify(name, base=False)  # the base: checked by load_base when first read, then kept
            self._new_base(lambda: zoo.load_base(name), f"zoo:{zoo.base_name(name)}")  # one base per zoo family
            return self._swap(read_bundle(zoo.bundle_path(name)), name, start)
        if Path(source).exists() or not hub.is_repo_id(source):
            if not self.allow_local:
                raise InvalidArgumentError(f"{source!r} is not a zoo bundle or Hub repo id; local folders are read only "
                                           "when the app is started with --allow-local")
            folder = Path(source) / (subfolder or "")
            if (folder / CONFIG_NAME).is_file():
                return self._swap(read_bundle(folder), str(folder), start)
        else:
            try:
                bundle = read_bundle(source, subfolder=subfolder, revision=revision)
            except (LorunError, OSError):  # not a bundle there: load_network below says what is
                bundle = None
            if bundle is not None and bundle.config["base_fingerprint"] == self._fingerprint():
                return self._swap(bundle, bundle.label, start)
        net, _ = load_network(source, subfolder=subfolder, revision=revision)
        self._new_base(lambda: None, source)  # bundles of this network's base and unfolding swap into it
        if net.share == "lora":
            self.networks[_unfolding(net.config.to_dict())] = net
        self._show(net, source)
        return f"loaded {source} with its own base in {time.perf_counter() - start:.1f} s"

    def _new_base(self, load: Callable[[], torch.nn.Module | None], origin: str) -> None:
        """Make ``origin``'s base current: the one in use, a zoo family's kept from before (with its
        live networks: switching CS and SR back and forth reloads nothing), or ``load()``'s."""
        if origin == self.base_origin and self.base is not None:
            return
        if self.base_origin.startswith(zoo.PREFIX):
            self.parked[self.base_origin] = (self.base, self.networks)
        self.base, self.networks = self.parked.pop(origin, None) or (load(), {})
        self.base_origin = origin

    def _fingerprint(self) -> str:
        return next(iter(self.networks.values())).base_fingerprint() if self.networks else ""

    def _swap(self, bundle: Bundle, label: str, start: float) -> str:
        """Swap ``bundle`` into the live network of its unfolding, built around the base if new."""
        config = bundle.config
        if self.networks and config["base_fingerprint"] != self._fingerprint():
            raise IncompatibleBundleError(f"{label} was trained on another base denoiser than the one loaded "
                                          f"({self.base_origin}); it cannot swap into these networks")
        key = _unfolding(config)
        net = self.networks.get(key)
        if net is None and self.base is None:
            raise IncompatibleBundleError(f"{label} is a task bundle whose unfolding no loaded network has; "
                                          "load its base first (a zoo task or a saved network)")
        if net is None:
            net = UnfoldedNetwork.from_bundle(self.base, bundle)
            what = f"loaded {label} into a new {config['algorithm'].upper()} LoRun-{config['K']} network around the base in memory"
        else:
            net.load_adapters(bundle)
            what = f"swapped {label} into the live LoRun-{config['K']} network (adapters, steps, operator; base not reloaded)"
        self.networks[key] = net
        self._show(net, label)
        return f"{what} in {(time.perf_counter() - start) * 1e3:.0f} ms"

    def _show(self, net: UnfoldedNetwork, label: str) -> None:
        self.net, self.task = net.eval(), label

    def report(self) -> str:
        """The live network's parameter report (what the page's report panel shows)."""
        return "" if self.net is None else f"{self.task}\n{self.net.parameter_report()}"

    # ---- images ---------------------------------------------------------------------------
    def read_upload(self, path: str | os.PathLike) -> torch.Tensor:
        """A C x H x W image (1 or 3 channels) from an uploaded file, after checking its size in bytes and pixels."""
        from PIL import Image, UnidentifiedImageError

        path = Path(path)
        size_mb = path.stat().st_size / 2**20
        if size_mb > self.limits.max_upload_mb:
            raise InvalidArgumentError(f"{path.name} is {size_mb:.1f} MB; the limit is {self.limits.max_upload_mb:g} MB")
        try:
            with Image.open(path) as image:  # reads the header only
                width, height = image.size
        except (UnidentifiedImageError, OSError, ValueError):
            raise CorruptFileError(f"{path.name} is not an image this page can read (PNG, JPEG, TIFF, BMP, ...)") from None
        self._check_size(height, width, path.name)
        return _gray_if_equal(load_image(path))

    def built_in(self, name: str) -> torch.Tensor:
        """A built-in photograph, 256 x 256 (shipped in the package: ``lorun_peft/data/photos``)."""
        if name not in BUILT_IN:
            raise InvalidArgumentError(f"no built-in image {name!r}; choose one of {list(BUILT_IN)}")
        return _gray_if_equal(photographs([name], channels=3)[0])

    def _check_size(self, height: int, width: int, label: str) -> None:
        low, high = self.limits.min_side, self.limits.max_side
        if not (low <= height <= high and low <= width <= high):
            raise InvalidArgumentError(f"{label} is {width} x {height} pixels; this page takes sides from {low} to {high} "
                                       "(start the app with --max-side to change it)")

    # ---- restoring ------------------------------------------------------------------------
    @torch.no_grad()
    def restore(self, image: torch.Tensor, mode: str = DEGRADE, noise_sigma: float = 0.0, seed: int = 0) -> Restoration:
        """Degrade ``image`` (C x H x W) with the task's operator and restore it, or (``mode=
        "measurement"``) restore it as the measurement itself (super-resolution, a snapshot). A gray
        network restores a colour image by its task's colour policy, as ``lorun restore`` does
        (:mod:`lorun_peft.data.colour`); PSNR/SSIM as the task scores (SR: on Y, the border shaved)."""
        if self.net is None:
            raise InvalidArgumentError("choose a task first")
        if mode not in (DEGRADE, MEASUREMENT):
            raise InvalidArgumentError(f"mode must be {DEGRADE!r} or {MEASUREMENT!r}, got {mode!r}")
        if not 0 <= noise_sigma <= 0.5:
            raise InvalidArgumentError(f"measurement noise must be between 0 and 0.5, got {noise_sigma}")
        net, operator = self.net, self.net.operator
        self._check_size(image.shape[-2], image.shape[-1], "the image")
        task = task_of(operator)
        if mode == MEASUREMENT and not task.measurement_is_image:
            raise InvalidArgumentError(f"a {task.name} measurement is not an image ({task.summary}): "
                                       "choose 'degrade' for this task")
        start = time.perf_counter()
        truth = task.fit_image(operator, image)[None] if mode == DEGRADE else None
        # the page's largest sides (Limits) fit the memory whole, but a small machine tiles beyond its budget
        large = may_need_tiles(image.shape[-2] * image.shape[-1] * image.shape[-3])
        runner = TiledNetwork(net, progress=True) if large and tiling_refusal(net) is None else net
        try:
            _, initial, restored, stages = measure_and_restore(runner, truth, noise_sigma, torch.Generator().manual_seed(seed),
                                                               y=image[None] if truth is None else None)
        except (InvalidArgumentError, RuntimeError) as err:
            raise InvalidArgumentError(f"this image does not fit the task's operator: {err}") from None
        scoring = task.metric_options(operator)

        def scored(x: torch.Tensor) -> torch.Tensor:  # what PSNR/SSIM compare (SR: the luma, the border shaved)
            x = rgb_to_y(x) if scoring["y_channel"] and x.shape[1] == 3 else x
            return shave(x.clamp(0, 1), scoring["border"])

        def picture(x: torch.Tensor) -> np.ndarray:
            return x.clamp(0, 1)[0].permute(1, 2, 0).squeeze(-1).float().numpy()

        result = Restoration(None if truth is None else picture(truth), picture(initial), picture(restored))
        policy = colour_policy(net, image[None])
        where = "on Y" if scoring["y_channel"] else "over R, G and B"
        result.colour = f"{POLICY_TEXT[policy]}; PSNR/SSIM {where}" if policy else ""
        for name, x in zip(net.adapter_names, stages):
            score = f"  {float(psnr(scored(x), scored(truth))):.2f} dB" if truth is not None else ""
            result.stages.append((picture(x), name + score))
        if truth is not None:
            for label, x in (("initial", initial), ("restored", restored)):
                result.metrics[f"{label} PSNR (dB)"] = round(float(psnr(scored(x), scored(truth))), 2)
                result.metrics[f"{label} SSIM"] = round(float(ssim(scored(x), scored(truth))), 4)
        result.seconds = time.perf_counter() - start
        return result

