"""Model cards (``README.md``) of saved bundles and bases, built with huggingface_hub's
``ModelCard`` / ``ModelCardData``: the Hub reads their metadata (library_name, tags with the task,
pipeline_tag, base_model, metrics, the base fingerprint), people read the table below it.

huggingface_hub is imported inside the card functions only, so ``import lorun_peft`` stays light.

>>> task_summary({"type": "BlockCS", "ratio": 0.25, "block": 8, "seed": 0})
'BlockCS (ratio=0.25, block=8)'
>>> card = base_card({"denoiser": {"qualname": "UNet"}, "fingerprint": "sha256:ab", "parameters": 1200})
>>> card.splitlines()[:2]
['---', 'library_name: lorun_peft']
"""

from __future__ import annotations

from typing import Any, Mapping

__all__ = ["TASK_TAGS", "task_summary", "bundle_card", "base_card", "network_card"]

TASK_TAGS = {"BlockCS": "compressive-sensing", "BlurDownsample": "super-resolution", "CASSI": "spectral-snapshot-compressive-imaging"}


def task_summary(operator: Mapping[str, Any]) -> str:
    """The operator and what it measures, e.g. ``"BlockCS (ratio=0.25, block=32)"``."""
    skip = ("type", "seed", "init", "learnable")  # how the operator was initialised, not what it measures
    settings = ", ".join(f"{k}={v}" for k, v in operator.items() if k not in skip and isinstance(v, (int, float, str)))
    return f"{operator.get('type')} ({settings})"


def _card(body: str, **metadata: Any) -> str:
    from huggingface_hub import ModelCard, ModelCardData  # lazily: see the module docstring

    data = ModelCardData(pipeline_tag="image-to-image", **metadata)
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n{body}"))


def bundle_card(config: Mapping[str, Any], base_model: str | None) -> str:
    """A bundle's README.md from its ``lorun_config.json`` (``base_model``: the base's Hub repo id)."""
    operator = config["operator"]
    tags = ["lorun_peft", "peft", config["adapter"], "deep-unfolding", "image-restoration"]
    tags += [TASK_TAGS[operator["type"]]] if operator["type"] in TASK_TAGS else []
    denoiser = config["denoiser"]
    ranks = config["ranks"].values()
    rows = [
        ("task", task_summary(operator)),
        ("stages K", config["K"]),
        ("algorithm", config["algorithm"].upper()),
        ("adapters", f"{config['adapter']}, gamma = {config['gamma']}%, ranks {min(ranks)}-{max(ranks)}"),
        ("noise-level input", config["noise_level"]),
        ("base denoiser", f"`{denoiser['module']}.{denoiser['qualname']}`"),
        ("base fingerprint", f"`{config['base_fingerprint']}`"),
        ("lorun_peft version", config["library_version"]),
    ]
    for key, value in config["metrics"].items():
        label = {"psnr": "PSNR (dB)", "ssim": "SSIM"}.get(key.lower(), key)
        rows.append((label, f"{value:.4g}" if isinstance(value, float) else value))
    table = "\n".join(["| setting | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows])
    body = (
        f"\n# LoRun task bundle: {task_summary(operator)}\n\n"
        "A deep LoRA-unfolding network (LoRun) task for [lorun_peft](https://pypi.org/project/lorun_peft/): "
        f"{config['K']} PEFT adapters, one per unfolding stage, for one frozen shared base denoiser, plus the "
        "stage step parameters and the degradation operator's state. The base is saved separately and must match "
        "the fingerprint below.\n\n"
        f"{table}\n\n## Use\n\n```python\nimport lorun_peft\n"
        "net = lorun_peft.load(BASE, BUNDLE)            # BASE: saved base folder, Hub repo or module\n"
        "net = lorun_peft.load(BASE, BUNDLE, module=MyDenoiser(...))  # a base of your own denoiser class\n"
        "net.load_adapters(OTHER_BUNDLE)               # swap the task in the live network\n```\n\n"
        "Each stage is also a plain PEFT adapter: "
        '`peft.PeftModel.from_pretrained(base, BUNDLE, subfolder="stage_0")`.\n\n'
        "## Files\n\n- `lorun_config.json`: settings, fingerprint, sha256 of every file\n"
        "- `unfolding.safetensors`: step parameters and operator state\n"
        "- `stage_k/adapter_config.json`, `stage_k/adapter_model.safetensors`: PEFT adapters\n"
    )
    metrics = [k for k, v in config["metrics"].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return _card(
        body, library_name="peft", tags=tags, base_model=base_model, metrics=metrics or None,
        base_fingerprint=config["base_fingerprint"],
    )


def base_card(config: Mapping[str, Any]) -> str:
    """A saved base's README.md from its ``base_config.json``."""
    denoiser = config["denoiser"]
    body = (
        f"\n# LoRun base denoiser: {denoiser['qualname']}\n\n"
        f"The frozen shared base of LoRun task bundles (fingerprint `{config['fingerprint']}`, "
        f"{config['parameters']:,} parameters). Load with `lorun_peft.load(THIS, BUNDLE)`.\n"
    )
    tags = ["lorun_peft", "deep-unfolding", "image-restoration", "denoiser"]
    return _card(body, library_name="lorun_peft", tags=tags, base_fingerprint=config["fingerprint"])


def network_card(config: Mapping[str, Any]) -> str:
    """A saved network's README.md from its :class:`~lorun_peft.config.UnfoldConfig` (as a dict)."""
    operator, share = config["operator"], config["share"]
    kind = {"lora": f"LoRun-{config['K']}", "base": "Block-1", "none": f"Block-{config['K']}"}[share]
    tags = ["lorun_peft", "deep-unfolding", "image-restoration"] + ([TASK_TAGS[operator["type"]]] if operator["type"] in TASK_TAGS else [])
    layout = ("`base/` (the shared base) and `bundle/` (the task: adapters, steps, operator; it swaps into any "
              "network of the same base)") if share == "lora" else "`network.safetensors` (every weight)"
    body = (
        f"\n# {kind} unfolded network: {task_summary(operator)}\n\n"
        f"A {config['K']}-stage {config['algorithm'].upper()} deep unfolding network saved by "
        f"[lorun_peft](https://pypi.org/project/lorun_peft/): `unfold_config.json` (its settings) and {layout}.\n\n"
        "```python\nfrom lorun_peft.unfold import UnfoldedNetwork\n"
        "net = UnfoldedNetwork.from_pretrained(THIS)                       # built-in denoisers\n"
        "net = UnfoldedNetwork.from_pretrained(THIS, denoiser=MyDenoiser)  # a denoiser class of your own\n```\n"
    )
    return _card(body, library_name="lorun_peft", tags=tags)
