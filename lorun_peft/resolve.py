"""What a ``--model`` names, loaded as a ready network: one entry point for every saved form.

:func:`load_network` accepts

- a folder written by ``net.save_pretrained`` (``unfold_config.json``), or a ``lorun train --out``
  folder (its network is in ``model/``);
- a task bundle folder (``lorun_config.json``) with its base: ``base=`` (a base folder, a Hub repo,
  ``"zoo"`` or ``"zoo:cs"``), else the base folder beside the bundle when there is one (the zoo's
  and the Hub layout's: ``base-<family>/`` for a bundle ``<family>-...`` where there is one, else
  ``base/``);
- a Hub repo id (+ ``subfolder``, ``revision``) holding any of the above, a run folder uploaded as
  it is included (``subfolder/model/``); ``HF_ENDPOINT``, the Hub cache and ``HF_HUB_OFFLINE``
  apply as in huggingface_hub;
- ``zoo:NAME``, a bundle of the shipped zoo;
- a model of the old single-file format (``model.safetensors`` with the configuration in its
  metadata, lorun_peft 0.1): it loads through :func:`load_legacy`, and ``lorun convert OLD NEW``
  rewrites it with ``save_pretrained``.

:func:`describe` gives the command line's view of a network (task, channels, operator, denoiser,
settings).

>>> net, note = load_network("zoo:cs-0.25")
>>> describe(net)["task"], net.K, note
('cs', 9, None)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from . import zoo
from .config import UnfoldConfig
from .denoisers import build_denoiser
from .errors import CorruptFileError, HubFolderNotFoundError, IncompatibleBundleError, InvalidArgumentError
from .operators import operator_from_config
from .persistence import _hub as hub
from .persistence.networks import NETWORK_CONFIG
from .persistence.schema import BASE_CONFIG_NAME, CONFIG_NAME, check_tensors
from .tasks import task_of
from .unfold import UnfoldedNetwork, load

__all__ = ["load_network", "describe", "load_legacy", "run_model_folder", "RUN_MODEL", "LEGACY_FILE"]

RUN_MODEL = "model"  # `lorun train --out DIR` saves its network in DIR/model/
LEGACY_FILE, LEGACY_FORMAT = "model.safetensors", "lorun-model"


def describe(net: UnfoldedNetwork) -> dict[str, Any]:
    """The command line's view of ``net``: task, channels, operator config, denoiser (name,
    config) and the unfolding settings."""
    config = net.unfold_config()
    operator, denoiser = dict(config.operator or {}), dict(config.denoiser or {})
    task = task_of(net.operator)
    return {
        "task": task.name,
        "channels": task.channels(net.operator, (denoiser.get("config") or {}).get("in_channels", 1)),
        "operator": operator,
        "denoiser": {"name": denoiser.get("registry_name") or denoiser.get("qualname"), "config": denoiser.get("config")},
        "unfold": config.settings(),
    }


def run_model_folder(folder: Path) -> Path:
    """Where ``lorun train --out folder`` keeps its network."""
    return Path(folder) / RUN_MODEL


def _base_for(bundle: Path, base: str | None) -> Any:
    from_zoo = zoo.base_for_spec(base)
    if from_zoo is not None:
        return from_zoo
    if base is not None:
        return base
    beside = zoo.base_path(bundle.parent, bundle.name)  # base-<family>/ or base/
    if (beside / BASE_CONFIG_NAME).is_file():
        return beside
    raise InvalidArgumentError(
        f"{bundle} is a task bundle; it needs its base: give --base (a folder written by save_base, a Hub repo, or 'zoo')"
    )


def load_network(spec: str | os.PathLike, *, base: str | None = None, subfolder: str | None = None,
                 revision: str | None = None, **hub_kwargs: Any) -> tuple[UnfoldedNetwork, str | None]:
    """The network ``spec`` names (see the module docstring), in eval mode, and a note for the user
    (None, or what to do about an old format)."""
    text = str(spec)
    if text.startswith(zoo.PREFIX):
        if base is not None or subfolder is not None or revision is not None:
            raise InvalidArgumentError(f"{text} is a zoo bundle: --base, --subfolder and --revision do not apply")
        return zoo.load(text), None
    path = Path(spec)
    if path.exists() or not hub.is_repo_id(text):
        if revision is not None:
            raise InvalidArgumentError(f"--revision applies to Hub repos; {text!r} is a local path")
        folder = path / hub.check_subfolder(subfolder) if subfolder else path
        if (run_model_folder(folder) / NETWORK_CONFIG).is_file():
            folder = run_model_folder(folder)
        if (folder / NETWORK_CONFIG).is_file():
            return UnfoldedNetwork.from_pretrained(folder), None
        if (folder / CONFIG_NAME).is_file():
            return load(_base_for(folder, base), folder), None
        legacy = folder / LEGACY_FILE if folder.is_dir() else folder
        if legacy.is_file():
            return load_legacy(legacy), (f"{legacy} is in the old single-file format (lorun_peft 0.1); it was converted on "
                                         f"loading: `lorun convert {spec} NEW_FOLDER` writes it in the current format")
        if not path.exists():
            raise FileNotFoundError(f"model not found: {spec} (train one with `lorun train --out DIR`, or name a Hub repo user/name)")
        raise InvalidArgumentError(f"{folder} holds no saved network ({NETWORK_CONFIG}), task bundle ({CONFIG_NAME}) or model ({LEGACY_FILE})")
    # a saved network there, or a run folder uploaded as it is (its network in model/), as locally
    for where in (subfolder, f"{subfolder}/{RUN_MODEL}" if subfolder else RUN_MODEL):
        try:
            return UnfoldedNetwork.from_pretrained(text, subfolder=where, revision=revision, **hub_kwargs), None
        except HubFolderNotFoundError:
            pass
    # not a saved network there: a task bundle, with --base or the repo's own base/ folder
    base_model: Any = zoo.base_for_spec(base)
    if base_model is None and base is None and subfolder:  # a zoo on the Hub: the family's base first
        family_base = zoo.family_base(subfolder)
        try:
            return load(text, text, subfolder=subfolder, revision=revision, base_subfolder=family_base,
                        base_revision=revision, **hub_kwargs), None
        except HubFolderNotFoundError as err:
            if err.subfolder != family_base:  # the bundle itself is missing: no base would help
                raise
    if base_model is not None:
        options: dict[str, Any] = {}
    else:
        base_model = base or text
        options = {} if base else {"base_subfolder": zoo.BASE, "base_revision": revision}
    return load(base_model, text, subfolder=subfolder, revision=revision, **options, **hub_kwargs), None


def load_legacy(file: Path) -> UnfoldedNetwork:
    """A network of the old single-file format: ``model.safetensors`` whose metadata holds the
    command line's configuration (format "lorun-model")."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="pt") as f:
            config = json.loads((f.metadata() or {})["lorun"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no items()
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as err:
        raise CorruptFileError(f"{file} is not a lorun model file: {err!r}") from err
    if not isinstance(config, dict) or config.get("format") != LEGACY_FORMAT:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise IncompatibleBundleError(f"{file} has format {found!r}, expected {LEGACY_FORMAT!r}")
    try:
        denoiser = build_denoiser(config["denoiser"]["name"], **config["denoiser"]["config"])
        net = UnfoldedNetwork(denoiser, operator_from_config(config["operator"]), UnfoldConfig(**config["unfold"]))
    except (KeyError, TypeError, InvalidArgumentError) as err:
        raise IncompatibleBundleError(f"{file}: the model configuration is incomplete or has unknown fields: {err!r}") from err
    check_tensors(tensors, net.state_dict(), f"{file} does not fit the network its configuration builds", dtypes=False)
    net.load_state_dict(tensors)
    return net.eval()
