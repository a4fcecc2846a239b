"""int8 files: onnxruntime's static quantization of an exported file, calibrated on images.

The denoiser's layers (convolutions and what lies between them: concatenations, pooling,
resizing, activations) run in int8; the data step (the sampling matrix, FFTs, the prox) stays in
float, where rounding would cost most: SR's FFTs pass complex numbers through ``Concat`` nodes,
and quantizing those cost 7 dB. Nodes are chosen by the module the exporter says they come from
(its ``pkg.torch.onnx.name_scopes`` metadata: under ``denoisers``). Activation ranges come from the images given
(``MinMax``), weights are per channel, and ``reduce_range`` keeps 7-bit weights, which x86 CPUs
without VNNI need to avoid overflow in their int8 dot products. What int8 costs in PSNR and gains
in speed is measured by ``python -m benchmarks.export_speed`` (see RESULTS.md): measure before
shipping an int8 file.

>>> import tempfile, pathlib, torch
>>> from lorun_peft import unfold
>>> from lorun_peft.denoisers import UNet
>>> from lorun_peft.operators import BlockCS
>>> from lorun_peft.export import to_onnx, OnnxNetwork
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> net = unfold(UNet(in_channels=1, width=4, depth=1), BlockCS(0.25, block=8), K=2)
>>> float_file = to_onnx(net, folder / "cs.onnx", image_size=(16, 16)).path
>>> int8_file = to_int8(float_file, folder / "cs-int8.onnx", [torch.rand(1, 1, 32, 32) for _ in range(4)])
>>> OnnxNetwork(int8_file).metadata["precision"]
'int8 (static, calibrated on 4 images)'
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import InvalidArgumentError
from ..persistence.atomic import atomic_write
from .metadata import IMAGE
from .runtime import OnnxNetwork

__all__ = ["to_int8", "denoiser_nodes", "QUANTIZED_OPS"]

QUANTIZED_OPS = ("Conv", "Concat", "Resize", "MaxPool", "Relu")  # the denoiser's; MatMul, DFT, Add... stay float


def denoiser_nodes(model: Any) -> list[str]:
    """The names of the nodes of ``QUANTIZED_OPS`` that torch.onnx says belong to a denoiser."""
    chosen = []
    for node in model.graph.node:
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), "")
        if node.op_type in QUANTIZED_OPS and "'net.denoisers" in scopes:
            chosen.append(node.name)
    return chosen


def to_int8(source: str | os.PathLike, target: str | os.PathLike, images: Sequence[torch.Tensor]) -> Path:
    """Write an int8 copy of the exported file ``source`` at ``target``, calibrated on ``images``
    (clean C x H x W or 1 x C x H x W tensors of the file's size, or of whole blocks for block CS;
    the file's operator measures them). The metadata is kept, with ``precision`` added."""
    try:
        from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    except ImportError as err:
        raise ImportError("int8 export needs onnxruntime: pip install 'lorun_peft[onnx]'") from err
    import onnx

    runner = OnnxNetwork(source)
    if not images:
        raise InvalidArgumentError("to_int8 needs calibration images (a few training images)")
    feeds = []
    with torch.no_grad():
        for x in images:
            x = x if x.dim() == 4 else x[None]
            data = x if runner.simulates else runner.operator.A(x)
            runner.check_input(data)  # a size the file cannot take is refused here, with the file's own message
            feeds.append({runner.input.name: np.ascontiguousarray(data.float().numpy())})

    class Feeds(CalibrationDataReader):
        def __init__(self) -> None:
            self.remaining = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.remaining, None)

    nodes = denoiser_nodes(onnx.load(str(source)))
    if not nodes:
        raise InvalidArgumentError(f"{source} names no node of the denoiser (was it written by lorun export?)")
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "int8.onnx"
        quantize_static(str(source), str(out), Feeds(), quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANTIZED_OPS),
                        nodes_to_quantize=nodes,
                        per_channel=True, reduce_range=True, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                        calibrate_method=CalibrationMethod.MinMax)
        model = onnx.load(str(out))
    what = "images" if runner.metadata.get("input") == IMAGE else "images, measured by the file's operator"
    onnx.helper.set_model_props(model, {**runner.metadata, "precision": f"int8 (static, calibrated on {len(feeds)} images)",
                                        "calibration": what})
    target = Path(target)
    with atomic_write(target) as f:
        f.write(model.SerializeToString())
    return target
