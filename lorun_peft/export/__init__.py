"""Deployment without PyTorch: export a network to ONNX and run it on onnxruntime (``pip install
'lorun_peft[onnx]'``; nothing else in lorun_peft imports this package).

- :func:`to_onnx` (:mod:`.writer`): adapters merged, all K stages with the operator inside, one
  file, checked against PyTorch on onnxruntime right after writing (``lorun export``);
- :class:`OnnxNetwork` (:mod:`.runtime`): the file on onnxruntime as a network (``lorun restore``
  and ``lorun eval`` take an ``.onnx`` model);
- :mod:`.metadata`: what the file says about itself (task, operator, sampling, shapes, value range);
- :func:`to_int8` (:mod:`.quantize`): onnxruntime's static int8 quantization, calibrated on images.

"""

from __future__ import annotations

from .quantize import to_int8
from .runtime import OnnxNetwork, is_onnx
from .writer import ExportReport, to_onnx

__all__ = ["to_onnx", "to_int8", "ExportReport", "OnnxNetwork", "is_onnx"]
