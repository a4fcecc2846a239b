"""Run an exported ONNX file on onnxruntime, as a network the rest of lorun_peft can use.

:class:`OnnxNetwork` looks like an unfolded network to ``evaluate``, ``lorun restore`` and
``lorun eval``: ``net(y)`` / ``net(y, return_stages=True)`` and ``net.operator`` (rebuilt from the
file's metadata, so images can be measured to test it). Inputs are checked against the file's
shape before onnxruntime sees them: a wrong size is an error that says which size fits.

>>> import tempfile, pathlib, torch
>>> from lorun_peft import unfold
>>> from lorun_peft.denoisers import UNet
>>> from lorun_peft.operators import BlurDownsample
>>> from lorun_peft.export import to_onnx
>>> net = unfold(UNet(in_channels=1, width=4, depth=1), BlurDownsample(torch.ones(3, 3), scale=2, channels=1), K=2, algorithm="hqs")
>>> path = to_onnx(net, pathlib.Path(tempfile.mkdtemp()) / "sr.onnx", image_size=(16, 16)).path
>>> runner = OnnxNetwork(path)
>>> runner.task, tuple(runner(torch.rand(3, 1, 8, 8)).shape)
('sr', (3, 1, 16, 16))
>>> runner(torch.rand(1, 1, 10, 10))
Traceback (most recent call last):
...
lorun_peft.errors.InvalidArgumentError: sr.onnx takes a measurement shaped (N, 1, 8, 8) (images of 16 x 16), got (1, 1, 10, 10); export the model again with --image-size for another size
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import CorruptFileError, InvalidArgumentError
from .metadata import IMAGE, read_config, read_operator
from .writer import session

__all__ = ["OnnxNetwork", "is_onnx"]


def is_onnx(spec: Any) -> bool:
    """Whether a ``--model`` names an ONNX file."""
    return str(spec).lower().endswith(".onnx")


class OnnxNetwork(nn.Module):
    """An exported file on onnxruntime (CPU), with the operator it was exported with.

    ``threads``: onnxruntime's intra-op threads (default: torch's thread count, which ``lorun
    --threads`` sets). ``net.config`` is the network's description (task, channels, operator,
    denoiser, unfolding settings); ``net.metadata`` every metadata entry as written.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX file not found: {self.path}")
        try:
            self.session = session(self.path, threads)
        except ImportError:
            raise
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own types for a damaged file
            raise CorruptFileError(f"{self.path} is not a readable ONNX file: {err}") from err
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.config = read_config(self.metadata, str(self.path))
        self.operator = read_operator(self.metadata, str(self.path))
        self.K = self.config["unfold"]["K"]
        self.simulates = self.metadata.get("input") == IMAGE
        self.input = self.session.get_inputs()[0]
        # evaluate() and the command line take the device and dtype from the first parameter
        self.register_parameter("anchor", nn.Parameter(torch.zeros(0), requires_grad=False))

    task = property(lambda self: self.config["task"], doc="cs, sr or cassi")

    def check_input(self, data: torch.Tensor) -> None:
        """Refuse ``data`` of a shape the file cannot take, saying which shape fits."""
        expected = self.input.shape
        shape = tuple(data.shape)
        fits = len(shape) == len(expected) and all(not isinstance(e, int) or e == s for e, s in zip(expected, shape))
        if fits:
            return
        fixed = ", ".join(str(e) if isinstance(e, int) else "N" if i == 0 else "any" for i, e in enumerate(expected))
        size = self.metadata.get("image_size", "?").strip("[]").replace(", ", " x ")
        hint = ("; export the model again with --image-size for another size" if all(isinstance(e, int) for e in expected[2:])
                else "")
        raise InvalidArgumentError(f"{self.path.name} takes a{'n' if self.simulates else ''} {self.input.name} shaped ({fixed}) "
                                   f"(images of {size}), got {shape}{hint}")

    @torch.no_grad()
    def forward(self, data: torch.Tensor, return_stages: bool = False) -> Any:
        """Restore from measurement ``data`` (an image, for a file that simulates), on onnxruntime."""
        self.check_input(data)
        outputs = self.session.run(None, {self.input.name: np.ascontiguousarray(data.detach().cpu().float().numpy())})
        restored = torch.from_numpy(outputs[0])
        if not return_stages:
            return restored
        return restored, list(torch.from_numpy(outputs[1]).unbind(1))

    def extra_repr(self) -> str:
        return f"path={self.path}, task={self.task}, K={self.K}, input={self.input.name} {self.input.shape}"
