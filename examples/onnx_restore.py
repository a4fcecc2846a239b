"""Restore a measurement with an exported file, importing only numpy and onnxruntime.

    lorun export --model zoo:cs-0.25 cs-0.25.onnx            # once, where lorun_peft is installed
    lorun measure --model zoo:cs-0.25 photo.png y.npz        # or a camera's own measurement
    python examples/onnx_restore.py cs-0.25.onnx y.npz restored.npy
"""

import sys

import numpy as np
import onnxruntime as ort

model, measurement, output = sys.argv[1:4]
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
meta = session.get_modelmeta().custom_metadata_map  # task, sampling, image_size, value_range, ...
y = np.load(measurement)  # lorun measure's .npz: y (N x m x H/32 x W/32 for block CS) and its sampling
if "sampling" in meta and str(y["sampling"]) != meta["sampling"]:
    sys.exit(f"{measurement} was measured with sampling {y['sampling']}, {model} expects {meta['sampling']}")
restored, stages = session.run(None, {"measurement": y["y"].astype(np.float32)})
colour = int(y.get("colour_channels", 1)) == 3  # a colour photograph: R, G and B measured one by one
np.save(output, restored[:, 0] if colour else restored[0])  # C x H x W, values in meta["value_range"] ([0, 1])
print(f"{meta['task']}: measurement {y['y'].shape} -> restored {restored.shape}")
