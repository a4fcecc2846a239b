"""What an exported ONNX file says about itself, in its metadata (string key -> string value).

onnxruntime reads it without PyTorch: ``session.get_modelmeta().custom_metadata_map``.

- ``task``: cs, sr or cassi; ``input``: ``measurement`` (or ``image`` for a file that simulates);
- ``input_shape`` / ``image_size``: the input's shape (names for dynamic dimensions) and the
  restored image's size (``[h, w]``; block CS: ``any multiple of B``); ``value_range``: ``[0, 1]``;
- ``sampling``: block CS, the fingerprint of the sampling matrix a measurement must be taken with
  (``lorun measure`` records the same in its .npz);
- ``config``: JSON, the network as :func:`lorun_peft.resolve.describe` gives it (operator
  configuration, denoiser, unfolding settings), and ``operator_state``: the operator's tensors
  (safetensors, base64), so the operator can be rebuilt to simulate measurements;
- ``lorun_peft_version``, ``source`` (how the model was named when it was exported).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from .. import __version__
from ..errors import CorruptFileError
from ..operators import operator_from_config
from ..resolve import describe
from ..tasks import task_of

__all__ = ["IMAGE", "MEASUREMENT", "file_metadata", "input_channels", "read_config", "read_operator"]

IMAGE, MEASUREMENT = "image", "measurement"


def input_channels(operator: Any, net: torch.nn.Module) -> int:
    """The channels of the images ``net`` restores."""
    return task_of(operator).channels(operator, net.unfold_config().denoiser["config"].get("in_channels", 1))


def file_metadata(net: torch.nn.Module, plain: torch.nn.Module, *, simulate: bool, image_size: tuple[int, int],
                  source: str | None) -> dict[str, str]:
    """The metadata of the file exported from ``net`` (``plain``: its merged, float32 copy)."""
    operator = plain.operator
    config = describe(net)
    config["channels"] = input_channels(operator, plain)
    state = {k: (v.detach().float() if v.is_floating_point() else v.detach()).contiguous() for k, v in operator.state_dict().items()}
    meta = {
        "lorun_peft_version": __version__,
        "task": config["task"],
        "input": IMAGE if simulate else MEASUREMENT,
        "image_size": json.dumps(list(image_size)),
        "value_range": "[0, 1]",
        "outputs": "restored: N x C x H x W; stages: N x K x C x H x W (every stage's output)"
                   + ("; measurement: the simulated y" if simulate else ""),
        "config": json.dumps(config),
        "operator_state": base64.b64encode(save_tensors(state)).decode("ascii"),
        "source": source or "",
    }
    meta.update(task_of(operator).export_metadata(operator, simulate))
    return meta


def read_config(metadata: dict[str, str], where: str) -> dict[str, Any]:
    """The ``config`` entry of a file's metadata, checked."""
    try:
        config = json.loads(metadata["config"])
        config["task"], config["operator"]["type"]  # noqa: B018 - both must be there
    except (KeyError, TypeError, ValueError) as err:
        raise CorruptFileError(f"{where} has no lorun_peft metadata (was it written by lorun export?): {err!r}") from err
    return config


def read_operator(metadata: dict[str, str], where: str) -> torch.nn.Module:
    """The operator the file was exported with, rebuilt from its configuration and tensors."""
    config = read_config(metadata, where)
    try:
        state = load_tensors(base64.b64decode(metadata["operator_state"], validate=True))
    except Exception as err:  # noqa: BLE001 - any damage reads the same
        raise CorruptFileError(f"{where}: the operator's tensors in its metadata cannot be read: {err}") from err
    operator = operator_from_config(config["operator"], state)
    try:
        operator.load_state_dict(state)
    except RuntimeError as err:
        raise CorruptFileError(f"{where}: the operator's tensors do not fit its configuration: {err}") from err
    return operator.eval()
