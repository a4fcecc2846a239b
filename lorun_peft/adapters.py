"""Everything that touches PEFT: the gamma rank rule, adapter configs, and K per-stage adapters
over one frozen base with cheap, gradient-safe stage switching.

Why not ``PeftModel.set_adapter`` per stage: it also sets ``requires_grad=False`` on every other
adapter, so after one forward over K stages only the last stage's adapter gets a gradient, and it
costs 8-15 ms per call. Here each tuner layer's active adapter is set directly on a cached layer
list (PEFT's private ``_active_adapter``; pinned by ``tests/test_adapters.py``).

>>> import torch
>>> from torch import nn
>>> base = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1))
>>> stages = StageAdapters(base, K=3, gamma=25.0)
>>> stages.adapter_names
['stage_0', 'stage_1', 'stage_2']
>>> stages(1, torch.rand(1, 1, 8, 8)).shape
torch.Size([1, 1, 8, 8])
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from peft import LoHaConfig, LoKrConfig, LoraConfig, PeftConfig, get_peft_model, get_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from .errors import IncompatibleBundleError, InvalidArgumentError

__all__ = [
    "gamma_rank",
    "stage_name",
    "LayerRank",
    "RankTable",
    "StageAdapters",
    "ADAPTER_KINDS",
    "find_layers",
    "plain_state",
    "saved_adapter_slots",
    "stage_configs",
    "adapter_config_mismatch",
    "save_stages",
]

ADAPTABLE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def gamma_rank(in_dim: int, out_dim: int, gamma: float) -> int:
    """The paper's rank rule r = ceil(min(in_dim, out_dim) * gamma / 100).

    ``gamma`` is a percentage in (0, 100]; dims are channels (convolutions) or features (linear).
    Computed with exact fractions so that, e.g., 30 channels at gamma 10 give 3, not 4.

    >>> gamma_rank(64, 32, 10)
    4
    >>> gamma_rank(30, 30, 10)
    3
    """
    check_gamma(gamma)
    for name, dim in (("in_dim", in_dim), ("out_dim", out_dim)):
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise InvalidArgumentError(f"{name} must be a positive int, got {dim!r}")
    return max(1, math.ceil(Fraction(min(in_dim, out_dim)) * Fraction(str(gamma)) / 100))


def check_gamma(gamma: Any) -> None:
    """Raise InvalidArgumentError unless gamma is a real number in (0, 100]."""
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 < gamma <= 100:
        raise InvalidArgumentError(f"gamma must be a number in (0, 100] (a percentage), got {gamma!r}")


def stage_name(k: int) -> str:
    """The adapter name of stage k: ``stage_k``."""
    return f"stage_{k}"


def layer_dims(module: nn.Module) -> tuple[int, int]:
    """(in_dim, out_dim) of a conv (channels) or linear (features) layer."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    return module.in_channels, module.out_channels


@dataclass(frozen=True)
class LayerRank:
    """One row of the rank table: an adapted layer and its per-stage rank."""

    name: str
    kind: str
    in_dim: int
    out_dim: int
    rank: int


@dataclass(frozen=True)
class RankTable:
    """Every adapted layer with its rank, and the weight layers left shared-only (with why)."""

    gamma: float
    adapter: str
    layers: tuple[LayerRank, ...]
    shared_only: tuple[tuple[str, str, str], ...]  # (name, kind, reason)

    def __str__(self) -> str:
        width = max([len(r.name) for r in self.layers] + [len(n) for n, _, _ in self.shared_only] + [5])
        lines = [f"{self.adapter} adapters, gamma = {self.gamma}%", f"{'layer':<{width}}  {'type':<8} {'in':>5} {'out':>5} {'rank':>4}"]
        lines += [f"{r.name:<{width}}  {r.kind:<8} {r.in_dim:>5} {r.out_dim:>5} {r.rank:>4}" for r in self.layers]
        if self.shared_only:
            lines.append("shared-only (no per-stage adapter):")
            lines += [f"  {name:<{width}}  {kind:<8} {reason}" for name, kind, reason in self.shared_only]
        return "\n".join(lines)


def find_layers(
    model: nn.Module, target_modules: Sequence[str] | str | None = None
) -> tuple[dict[str, nn.Module], list[tuple[str, str, str]]]:
    """Split a model's weight layers into adaptable targets and shared-only layers.

    Default targets: every Conv1d/Conv2d/Conv3d/Linear with groups == 1. ``target_modules`` may be
    a list of names (a name matches a module whose full name equals it or ends with ``.name``, as
    in PEFT) or a regex string matched against full names with ``re.fullmatch``.
    """
    targets: dict[str, nn.Module] = {}
    shared: list[tuple[str, str, str]] = []
    wanted = _target_matcher(target_modules)
    matched_any: set[str] = set()
    for name, module in model.named_modules():
        if not name or not any(True for _ in module.parameters(recurse=False)):
            continue
        kind = type(module).__name__
        hit = wanted(name)
        if hit is not None:
            matched_any.add(hit)
        if target_modules is not None and hit is None:
            shared.append((name, kind, "not in target_modules"))
        elif not isinstance(module, ADAPTABLE_TYPES):
            reason = "PEFT cannot adapt this layer type"
            if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
                reason = "PEFT cannot adapt transposed convolutions"
            if target_modules is not None:
                raise InvalidArgumentError(f"target_modules selects {name!r} ({kind}), which {reason[0].lower() + reason[1:]}")
            shared.append((name, kind, reason))
        elif getattr(module, "groups", 1) != 1:
            if target_modules is not None:
                raise InvalidArgumentError(f"target_modules selects {name!r}, a grouped convolution, which is not adapted")
            shared.append((name, kind, "grouped convolution"))
        else:
            targets[name] = module
    if isinstance(target_modules, (list, tuple)):
        missing = [t for t in target_modules if t not in matched_any]
        if missing:
            raise InvalidArgumentError(f"target_modules names {missing} that match no layer with weights in the denoiser")
    return targets, shared


def _target_matcher(target_modules: Sequence[str] | str | None) -> Callable[[str], str | None]:
    if target_modules is None:
        return lambda name: name
    if isinstance(target_modules, str):
        try:
            pattern = re.compile(target_modules)
        except re.error as err:
            raise InvalidArgumentError(f"target_modules is not a valid regex: {err}") from err
        return lambda name: target_modules if pattern.fullmatch(name) else None
    if not all(isinstance(t, str) for t in target_modules):
        raise InvalidArgumentError(f"target_modules must be a regex string or a list of names, got {target_modules!r}")

    def match(name: str) -> str | None:
        return next((t for t in target_modules if name == t or name.endswith("." + t)), None)

    return match


def _anchored(name: str) -> str:
    # PEFT matches pattern keys as re.match(rf"(.*\.)?({key})$", module_name): "^" pins the key to
    # the start, so "conv1" cannot also hit "block.conv1".
    return "^" + re.escape(name)


def _lora(ranks: dict[str, int], options: dict[str, Any], dora: bool = False) -> PeftConfig:
    patterns = {_anchored(n): r for n, r in ranks.items()}
    return LoraConfig(
        r=max(ranks.values()),
        lora_alpha=max(ranks.values()),
        target_modules=_fullmatch(ranks),
        rank_pattern=patterns,
        alpha_pattern=dict(patterns),
        use_dora=dora,
        **options,
    )


def _lycoris(config_cls: type) -> Callable[[dict[str, int], dict[str, Any]], PeftConfig]:
    def build(ranks: dict[str, int], options: dict[str, Any]) -> PeftConfig:
        patterns = {_anchored(n): r for n, r in ranks.items()}
        return config_cls(
            r=max(ranks.values()),
            alpha=max(ranks.values()),
            target_modules=_fullmatch(ranks),
            rank_pattern=patterns,
            alpha_pattern=dict(patterns),
            **options,
        )

    return build


def _fullmatch(ranks: dict[str, int]) -> str:
    # A str target_modules is matched with re.fullmatch against each module's full name.
    return "(" + "|".join(re.escape(n) for n in sorted(ranks)) + ")"


ADAPTER_KINDS: dict[str, Callable[[dict[str, int], dict[str, Any]], PeftConfig]] = {
    "lora": _lora,
    "dora": lambda ranks, options: _lora(ranks, options, dora=True),
    "loha": _lycoris(LoHaConfig),
    "lokr": _lycoris(LoKrConfig),
}


def plan_ranks(
    model: nn.Module, gamma: float, adapter: str = "lora", target_modules: Sequence[str] | str | None = None
) -> RankTable:
    """The rank table for ``model`` at ``gamma``, computed before PEFT rewrites the model."""
    check_gamma(gamma)
    if adapter not in ADAPTER_KINDS:
        raise InvalidArgumentError(f"adapter must be one of {sorted(ADAPTER_KINDS)}, got {adapter!r}")
    targets, shared = find_layers(model, target_modules)
    if not targets:
        raise InvalidArgumentError(
            f"the denoiser {type(model).__name__} has no layer PEFT can adapt "
            "(expected at least one Conv1d/Conv2d/Conv3d/Linear with groups=1)"
        )
    rows = tuple(
        LayerRank(name, type(m).__name__, *layer_dims(m), gamma_rank(*layer_dims(m), gamma)) for name, m in targets.items()
    )
    return RankTable(gamma=gamma, adapter=adapter, layers=rows, shared_only=tuple(shared))


class StageAdapters(nn.Module):
    """K named PEFT adapters (``stage_0`` ... ``stage_{K-1}``) over one frozen base denoiser.

    ``forward(k, *args)`` runs the base with stage k's adapter only. All K adapters stay
    trainable; the base weights are frozen. The base module is wrapped in place.
    """

    def __init__(
        self,
        base: nn.Module,
        K: int,  # noqa: N803
        gamma: float = 10.0,
        adapter: str = "lora",
        target_modules: Sequence[str] | str | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.table = plan_ranks(base, gamma, adapter, target_modules)  # before PEFT rewrites `base`
        ranks = {row.name: row.rank for row in self.table.layers}
        try:
            config = ADAPTER_KINDS[adapter](ranks, dict(options or {}))
        except TypeError as err:
            raise InvalidArgumentError(f"adapter_options do not fit the {adapter!r} PEFT config: {err}") from err
        self.adapter_names = [stage_name(k) for k in range(K)]
        self.peft_model = get_peft_model(base, config, adapter_name=self.adapter_names[0])
        for name in self.adapter_names[1:]:
            self.peft_model.add_adapter(name, config)
        # add_adapter leaves only the first adapter trainable: turn them all on.
        self.peft_model.set_requires_grad(self.adapter_names, True)
        self._named_tuner_layers = [
            (name.removeprefix("base_model.model."), m)
            for name, m in self.peft_model.named_modules()
            if isinstance(m, BaseTunerLayer)
        ]
        self._tuner_layers = [m for _, m in self._named_tuner_layers]
        self.can_merge = adapter != "dora"  # DoRA's magnitude rescaling is not a plain weight delta

    @property
    def model(self) -> nn.Module:
        """The base denoiser with PEFT's tuner layers injected."""
        return self.peft_model.base_model.model

    def activate(self, k: int) -> None:
        """Make ``stage_k`` the active adapter of every tuner layer (no requires_grad side effects)."""
        name = self.adapter_names[k]
        for layer in self._tuner_layers:
            layer._active_adapter = name  # PEFT-private; pinned by test_activate_matches_peft

    def forward(self, k: int, *args: Any) -> torch.Tensor:
        self.activate(k)
        return self.model(*args)

    def merged_forward(self, k: int, *args: Any) -> torch.Tensor:
        """Stage k as the plain base with weights W0 + delta_k, computed on the fly.

        Functional (``torch.func.functional_call``): nothing is merged in place, so the base
        weights never drift. Matches ``forward(k, ...)`` up to float rounding.
        """
        name = self.adapter_names[k]
        weights = {
            f"{path}.base_layer.weight": layer.base_layer.weight + layer.get_delta_weight(name)
            for path, layer in self._named_tuner_layers
        }
        for layer in self._tuner_layers:
            layer._active_adapter = []  # PEFT-private: no adapter branch, base layer only
        try:
            return torch.func.functional_call(self.model, weights, args, strict=False)
        finally:
            self.activate(k)

    def delta_weights(self) -> dict[str, list[torch.Tensor]]:
        """Each adapted layer's weight update per stage: ``{layer: [delta W_0, ..., delta W_{K-1}]}``."""
        with torch.no_grad():
            return {
                path: [layer.get_delta_weight(name).detach() for name in self.adapter_names]
                for path, layer in self._named_tuner_layers
            }

    @torch.no_grad()
    def merged_denoisers(self) -> list[nn.Module]:
        """K plain denoisers (no PEFT modules), stage k's with weights W0 + delta_k: the same
        values ``merged_forward`` computes, so their outputs equal it bit for bit."""
        plain = copy.deepcopy(self.peft_model).unload()  # PEFT: drop the tuner layers, keep W0
        plain.requires_grad_(True)
        merged = []
        for name in self.adapter_names:
            stage = copy.deepcopy(plain)
            for path, layer in self._named_tuner_layers:
                stage.get_submodule(path).weight.copy_(layer.base_layer.weight + layer.get_delta_weight(name))
            merged.append(stage)
        return merged

    def base_weights(self) -> dict[str, torch.Tensor]:
        """Each adapted layer's frozen base weight W0."""
        return {path: layer.get_base_layer().weight.detach() for path, layer in self._named_tuner_layers}

    def adapter_parameters(self, k: int) -> list[nn.Parameter]:
        """The parameters of stage k's adapter (PEFT keeps them in dicts keyed by adapter name)."""
        name = self.adapter_names[k]
        params = []
        for layer in self._tuner_layers:
            for pname, p in layer.named_parameters():
                parts = pname.split(".")
                if parts[0] != "base_layer" and len(parts) >= 2 and parts[1] == name:
                    params.append(p)
        return params

    def base_parameters(self) -> list[nn.Parameter]:
        """The shared base weights (everything that is not an adapter)."""
        adapter_ids = {id(p) for k in range(len(self.adapter_names)) for p in self.adapter_parameters(k)}
        return [p for p in self.peft_model.parameters() if id(p) not in adapter_ids]

    def layer_ranks(self, k: int) -> dict[str, int]:
        """The rank PEFT actually built for each adapted layer of stage k (LoRA-family ``r`` dicts)."""
        name = self.adapter_names[k]
        prefix = "base_model.model."
        return {
            n.removeprefix(prefix): int(m.r[name])
            for n, m in self.peft_model.named_modules()
            if isinstance(m, BaseTunerLayer) and name in getattr(m, "r", {})
        }


# ---- what bundles need to know about PEFT -------------------------------------------------------
# Adapter-config keys that are bookkeeping (PEFT sets them while saving) or only steer the
# initialisation of new weights: a swap copies trained weights, so they need not agree.
BOOKKEEPING_CONFIG_KEYS = frozenset({
    "peft_version", "inference_mode", "auto_mapping", "base_model_name_or_path", "revision",
    "init_lora_weights", "init_weights", "loftq_config", "eva_config", "corda_config", "lora_ga_config",
})


def unwrap(model: nn.Module) -> nn.Module:
    """The module a ``PeftModel`` wraps (``model.base_model.model``); any other module as it is."""
    return getattr(getattr(model, "base_model", None), "model", model)


def plain_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s state as before PEFT wrapped it: adapter tensors left out and each tuner layer's
    ``<layer>.base_layer.`` renaming undone, so a wrapped module gives its plain module's names.

    >>> base = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 1, 3))
    >>> names = set(base.state_dict())
    >>> set(plain_state(StageAdapters(base, K=2).model)) == names
    True
    """
    model = unwrap(model)
    tuners = {name for name, m in model.named_modules() if isinstance(m, BaseTunerLayer)}
    state: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        parts = key.split(".")
        layer = next((i for i in range(len(parts)) if ".".join(parts[:i]) in tuners), None)
        if layer is not None:
            if parts[layer] != "base_layer":
                continue  # an adapter's tensor
            parts = parts[:layer] + parts[layer + 1 :]
        state[".".join(parts)] = value
    return state


def saved_adapter_slots(stages: StageAdapters, k: int) -> dict[str, nn.Parameter]:
    """Stage k's keys as PEFT saves them (in ``adapter_model.safetensors``) -> its live parameters.

    PEFT's ``get_peft_model_state_dict`` names the keys; its tensors share storage with the
    parameters, which are matched by data pointer.
    """
    name = stages.adapter_names[k]
    by_pointer = {p.data_ptr(): p for p in stages.adapter_parameters(k)}
    slots = {}
    for file_key, tensor in get_peft_model_state_dict(stages.peft_model, adapter_name=name).items():
        if tensor.data_ptr() not in by_pointer:
            raise IncompatibleBundleError(
                f"PEFT saves {file_key!r} for {name}, which is not one of the stage's adapter parameters "
                "(e.g. bias='all'); such networks cannot swap bundles"
            )
        slots[file_key] = by_pointer[tensor.data_ptr()]
    return slots


def canonical(value: Any) -> Any:
    """A JSON-comparable form: sets and lists of plain values sorted (PEFT treats them as sets).

    >>> canonical({"target_modules": ("b", "a"), "r": 4})
    {'target_modules': ['a', 'b'], 'r': 4}
    """
    if isinstance(value, Mapping):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [canonical(v) for v in value]
        if all(isinstance(v, (str, int, float)) for v in items):
            return sorted(items, key=lambda v: (type(v).__name__, v))
        return items
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(getattr(value, "value", value))  # enums such as PeftType


def adapter_structure(config: Mapping[str, Any]) -> str:
    """Canonical JSON of an adapter config's fields that shape the adapter (bookkeeping and empty
    values dropped, so a field one PEFT version writes with its empty default and another lacks agrees)."""
    kept = {k: canonical(v) for k, v in config.items() if k not in BOOKKEEPING_CONFIG_KEYS and v}
    return json.dumps(kept, sort_keys=True)


def stage_configs(stages: StageAdapters) -> list[tuple[dict[str, Any], str]]:
    """Each stage's live PEFT config as a dict and its :func:`adapter_structure` (PEFT may share
    one config object between stages: each object is converted once)."""
    seen: dict[int, tuple[dict[str, Any], str]] = {}
    out = []
    for name in stages.adapter_names:
        config = stages.peft_model.peft_config[name]
        if id(config) not in seen:
            as_dict = config.to_dict()
            seen[id(config)] = (as_dict, adapter_structure(as_dict))
        out.append(seen[id(config)])
    return out


def adapter_config_mismatch(saved: Mapping[str, Any], live: Mapping[str, Any]) -> str:
    """Which fields of two adapter configs differ, with the layer ranks when the rank pattern does."""
    a, b = json.loads(adapter_structure(saved)), json.loads(adapter_structure(live))
    differences = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    detail = ""
    if "rank_pattern" in differences:
        a, b = saved.get("rank_pattern") or {}, live.get("rank_pattern") or {}
        changed = [f"{n.lstrip('^')} {a.get(n)} vs {b.get(n)}" for n in sorted(set(a) | set(b)) if a.get(n) != b.get(n)]
        detail = f" (the rank pattern does not fit; layer ranks, bundle vs network: {'; '.join(changed[:4])})"
    return f"differs from this network's in {differences}{detail}"


def save_stages(stages: StageAdapters, folder: str | os.PathLike) -> None:
    """Every stage in PEFT's own format: ``folder/stage_k/adapter_config.json`` and
    ``adapter_model.safetensors`` (``PeftModel.from_pretrained(base, folder, subfolder="stage_k")``
    loads one with plain PEFT); PEFT's generic ``README.md`` is removed."""
    stages.peft_model.save_pretrained(str(folder), selected_adapters=list(stages.adapter_names))
    (Path(folder) / "README.md").unlink(missing_ok=True)
