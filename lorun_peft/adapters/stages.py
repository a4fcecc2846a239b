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
import os
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from peft import LoHaConfig, LoKrConfig, LoraConfig, PeftConfig, get_peft_model, get_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from ..errors import IncompatibleBundleError, InvalidArgumentError
from .ranks import LayerRank, RankTable, check_gamma, gamma_rank, layer_dims
from .sharing import call_stage

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
# PEFT's LoHa/LoKr layers test `torch.rand(1) > module_dropout` while training: a data-dependent
# branch dynamo cannot trace (see StageAdapters.forward; pinned by tests/test_compile.py).
UNTRACEABLE_IN_TRAINING = frozenset({"loha", "lokr"})


def stage_name(k: int) -> str:
    """The adapter name of stage k: ``stage_k``."""
    return f"stage_{k}"


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

    compile_region = True  # torch.compile: one traced denoiser body for all stages (see sharing.call_stage)

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
        self.adapter = adapter
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
        # Stage k's adapter tensors by the names stage_0's have ("a.lora_A.stage_0.weight"):
        # compiled, every stage runs stage_0's traced body with stage k's tensors (see forward).
        slots = [n.split(".") for n, _ in self.model.named_parameters() if self.adapter_names[0] in n.split(".")]
        self._stage_slots = [
            [(".".join(parts), ".".join(name if part == self.adapter_names[0] else part for part in parts)) for parts in slots]
            for name in self.adapter_names
        ]
        self._module_dropout = getattr(config, "module_dropout", 0.0)  # LoHa/LoKr only
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
        if not torch.compiler.is_compiling():
            self.activate(k)
            return self.model(*args)
        if self.training and self.adapter in UNTRACEABLE_IN_TRAINING:
            # PEFT's LoHa/LoKr training forward tests `torch.rand(1) > module_dropout`, which dynamo
            # cannot trace; with no module dropout it computes the merged weights' forward.
            return self._eager_forward(k, args) if self._module_dropout else self.merged_forward(k, *args)
        # stage k's tensors in stage_0's slots: one code path for every stage, so k is never a guard
        # (and at inference one reused region, see sharing.call_stage)
        return self._call_with_active(self.adapter_names[0], self.stage_tensors(k), args)

    @torch.compiler.disable
    def _eager_forward(self, k: int, args: tuple[Any, ...]) -> torch.Tensor:
        self.activate(k)
        return self.model(*args)

    def _call_with_active(self, active: str | list[str], weights: dict[str, torch.Tensor], args: tuple[Any, ...]) -> torch.Tensor:
        """``call_stage`` with every tuner layer's active adapter set to ``active`` (PEFT-private
        ``_active_adapter``), restored afterwards: compiled regions and checkpointed calls under
        torch.compile accept only state changes that are undone."""
        previous = [layer._active_adapter for layer in self._tuner_layers]
        for layer in self._tuner_layers:
            layer._active_adapter = active
        try:
            return call_stage(self.model, weights, args, self.compile_region)
        finally:
            for layer, name in zip(self._tuner_layers, previous):
                layer._active_adapter = name

    def stage_tensors(self, k: int) -> dict[str, torch.Tensor]:
        """Stage k's adapter parameters keyed by stage_0's names: with stage_0 active,
        ``call_stage(self.model, stage_tensors(k), args)`` runs stage k (``forward`` compiled)."""
        return {slot: self.model.get_parameter(name) for slot, name in self._stage_slots[k]}

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
        return self._call_with_active([], weights, args)  # no adapter branch, base layers only

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
