"""The bundle methods of :class:`~lorun_peft.unfold.UnfoldedNetwork` (``net.save_adapters(...)``,
``net.load_adapters(...)``, ``UnfoldedNetwork.from_bundle(...)``, ...), a mixin base class whose
methods call the module functions of the same names with the network as first argument.

The persistence and Hub modules are imported inside the methods, when first used, so building a
network (``lorun_peft.unfold``) loads none of them; they import nothing of this module, so no
import cycle is hidden there.

>>> from lorun_peft.unfold import UnfoldedNetwork
>>> issubclass(UnfoldedNetwork, BundleMethods)
True
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from typing import TYPE_CHECKING

from ..config import UnfoldConfig
from ..errors import IncompatibleBundleError, InvalidArgumentError
from .fingerprint import fingerprint, live_fingerprint
from .protocol import Network

if TYPE_CHECKING:
    from .schema import Bundle

__all__ = ["BundleMethods"]


class BundleMethods(Network):
    """Bundle methods for :class:`~lorun_peft.unfold.UnfoldedNetwork` (a mixin base class).

    ``hub_kwargs`` are huggingface_hub's keyword options (``token``, ``endpoint``, ``cache_dir``
    for reads; ``token``, ``private``, ``endpoint`` for pushes; see :mod:`lorun_peft.persistence._hub`).
    """

    def save_adapters(
        self, path: str | os.PathLike, *, metrics: Mapping[str, Any] | None = None, base_model: str | None = None,
        storage_dtype: str | None = None,
    ) -> Path:
        """Save this task (adapters, steps, operator) as a bundle folder; see :func:`lorun_peft.persistence.saving.save_adapters`."""
        from . import saving
        return saving.save_adapters(self, path, metrics=metrics, base_model=base_model, storage_dtype=storage_dtype)

    def load_adapters(
        self, bundle: Bundle | str | os.PathLike, *, subfolder: str | None = None, revision: str | None = None, **hub_kwargs: Any,
    ) -> BundleMethods:
        """Swap a task bundle into this live network, atomically; see :func:`lorun_peft.persistence.swap.load_adapters`."""
        from . import swap
        return swap.load_adapters(self, bundle, subfolder=subfolder, revision=revision, **hub_kwargs)

    def save_base(self, path: str | os.PathLike, *, storage_dtype: str | None = None) -> Path:
        """Save the plain shared base denoiser; see :func:`lorun_peft.persistence.saving.save_base`."""
        from . import saving
        return saving.save_base(self, path, storage_dtype=storage_dtype)

    def push_adapters(
        self, repo_id: str, *, path_in_repo: str | None = None, revision: str | None = None, tag: str | None = None,
        commit_message: str | None = None, metrics: Mapping[str, Any] | None = None, base_model: str | None = None,
        **hub_kwargs: Any,
    ) -> Any:
        """Upload this task's bundle to the Hub; see :func:`lorun_peft.persistence.publish.push_adapters`."""
        from . import publish
        return publish.push_adapters(
            self, repo_id, path_in_repo=path_in_repo, revision=revision, tag=tag, commit_message=commit_message,
            metrics=metrics, base_model=base_model, **hub_kwargs,
        )

    def push_base(
        self, repo_id: str, *, path_in_repo: str | None = None, revision: str | None = None, tag: str | None = None,
        commit_message: str | None = None, **hub_kwargs: Any,
    ) -> Any:
        """Upload the plain base to the Hub; see :func:`lorun_peft.persistence.publish.push_base`."""
        from . import publish
        return publish.push_base(
            self, repo_id, path_in_repo=path_in_repo, revision=revision, tag=tag, commit_message=commit_message, **hub_kwargs,
        )

    def save_pretrained(self, path: str | os.PathLike, *, storage_dtype: str | None = None,
                        metrics: Mapping[str, Any] | None = None) -> Path:
        """Save the whole network (any share mode) into a folder; see :mod:`lorun_peft.persistence.networks`."""
        from . import networks
        return networks.save_pretrained(self, path, storage_dtype=storage_dtype, metrics=metrics)

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike, *, subfolder: str | None = None, revision: str | None = None,
                        denoiser: nn.Module | type | None = None, **hub_kwargs: Any) -> BundleMethods:
        """A network saved by ``save_pretrained`` (folder or Hub repo), in eval mode; ``denoiser``: an
        instance or class of your own denoiser (built-in ones rebuild by themselves). See :mod:`lorun_peft.persistence.networks`."""
        from . import networks
        return networks.read_pretrained(cls, source, subfolder=subfolder, revision=revision, denoiser=denoiser, **hub_kwargs)

    def push_to_hub(self, repo_id: str, *, path_in_repo: str | None = None, revision: str | None = None,
                    tag: str | None = None, commit_message: str | None = None, storage_dtype: str | None = None,
                    **hub_kwargs: Any) -> Any:
        """Upload the whole network as ``save_pretrained`` writes it; see :func:`lorun_peft.persistence.networks.push_to_hub`."""
        from . import networks
        return networks.push_to_hub(self, repo_id, path_in_repo=path_in_repo, revision=revision, tag=tag,
                                    commit_message=commit_message, storage_dtype=storage_dtype, **hub_kwargs)

    def unfold_config(self) -> UnfoldConfig:
        """``net.config`` with the operator's config and the base denoiser's spec filled in (what is saved)."""
        from . import networks
        return networks.unfold_config(self)

    def base_fingerprint(self) -> str:
        """The sha256 fingerprint bundles use to name this network's base."""
        return live_fingerprint(self)

    @classmethod
    def from_bundle(
        cls,
        base: nn.Module | str | os.PathLike,
        bundle: Bundle | str | os.PathLike,
        *,
        subfolder: str | None = None,
        revision: str | None = None,
        module: nn.Module | None = None,
        base_subfolder: str | None = None,
        base_revision: str | None = None,
        **hub_kwargs: Any,
    ) -> BundleMethods:
        """Build a ready LoRun network (in eval mode) from a base and a bundle (``lorun_peft.load``).

        ``base``: the plain denoiser module with the base weights, or a saved base (folder or Hub repo
        + ``base_subfolder``/``base_revision``; see :func:`lorun_peft.persistence.reading.load_base` for ``module``).
        ``bundle``: a folder, Hub repo (+ ``subfolder``, ``revision``) or :class:`~lorun_peft.persistence.schema.Bundle`.
        The base must have the fingerprint the bundle was trained on.
        """
        from . import _hub as hub, swap
        from ..operators import rebuild_operator
        from .reading import load_base, read_bundle
        from .schema import Bundle
        options = hub.check_options(hub_kwargs, "download")
        if not isinstance(bundle, Bundle):
            bundle = read_bundle(bundle, subfolder=subfolder, revision=revision, **options)
        if isinstance(base, nn.Module):
            if module is not None:
                raise InvalidArgumentError("pass either a base module or module=, not both")
            denoiser = base
        else:
            denoiser = load_base(base, module=module, subfolder=base_subfolder, revision=base_revision, **options)
        config = bundle.config
        found = fingerprint(denoiser)
        if found != config["base_fingerprint"]:
            raise IncompatibleBundleError(
                f"bundle {bundle.label} was trained on another base (fingerprint {config['base_fingerprint'][:19]}..., given base {found[:19]}...)"
            )
        operator = rebuild_operator(config["operator"], f"bundle {bundle.label}", bundle.operator_state)
        settings = UnfoldConfig(
            K=config["K"], algorithm=config["algorithm"], gamma=config["gamma"], adapter=config["adapter"],
            target_modules=config.get("target_modules"), noise_level=config["noise_level"],
            adapter_options=config.get("adapter_options") or {},
        )
        net = cls(denoiser, operator, settings)
        dtype = getattr(torch, config["dtype"], None)
        if isinstance(dtype, torch.dtype) and dtype != next(net.steps.parameters()).dtype:
            net.steps.to(dtype)
        swap.load_adapters(net, bundle)
        return net.eval()
