"""Exports seeded torchvision googlenets (10 classes) with torch.onnx, for OnnxTorchvisionTests.

usage: /usr/bin/python3 torchvision_export.py OUTDIR
Writes, for transform_input off and on, tv{0,1}.logits.bin (float32, little-endian) and the graphs
tv{0,1}_opset{N}.onnx: opset 13 for both, and for transform_input on also opsets 9, 11 and 17 (the
oldest torch.onnx still writes, a common choice, and the newest of PyTorch 1.13). input.bin holds
the (2, 3, 64, 64) float32 input every model ran on.
"""
import sys

import numpy as np
import torch
import torchvision

out = sys.argv[1]
torch.manual_seed(0)
x = torch.sin(torch.arange(2 * 3 * 64 * 64, dtype=torch.float32) * 0.37).reshape(2, 3, 64, 64)
x.numpy().astype("<f4").tofile(f"{out}/input.bin")
for transform in (0, 1):
    model = torchvision.models.googlenet(
        weights=None, aux_logits=False, init_weights=True, num_classes=10, transform_input=bool(transform)).eval()
    # Fresh running statistics are 0 and 1; random ones make the folded BatchNorm matter.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    with torch.no_grad():
        model(x).numpy().astype("<f4").tofile(f"{out}/tv{transform}.logits.bin")
    for opset in ((9, 11, 13, 17) if transform else (13,)):
        torch.onnx.export(model, x, f"{out}/tv{transform}_opset{opset}.onnx", opset_version=opset,
                          input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "N"}})
