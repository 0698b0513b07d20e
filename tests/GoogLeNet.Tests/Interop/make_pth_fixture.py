#!/usr/bin/python3
"""A torchvision googlenet checkpoint, an image and PyTorch's outputs for the interop tests.

Run from this folder with Debian's PyTorch: /usr/bin/python3 make_pth_fixture.py
Writes googlenet10.pth.gz (torch.save(model.state_dict()), gzipped), image.png, expected.json,
and solid.png (one colour, for known-answer preprocessing tests).

The model is torchvision's googlenet(num_classes=10, aux_logits=True, init_weights=True,
transform_input=False) after torch.manual_seed(0). Two changes keep the fixture small and the test
meaningful:
- every tensor longer than PERIOD repeats its first PERIOD initial values, so gzip shrinks the
  36 MB checkpoint to 1.4 MB (PERIOD is prime, so the repetition never lines up with channels
  and no two filters are equal);
- BatchNorm statistics are accumulated over a few random batches (momentum=None: a plain average),
  so activations keep their scale through the trunk and the running statistics, the BatchNorm
  affine parameters and num_batches_tracked all differ from their defaults.
"""
import gzip
import io
import json
import os

import numpy as np
import torch
import torchvision
import torchvision.transforms as T
from PIL import Image

torch.set_num_threads(1)
PERIOD = 4093
CALIBRATION_BATCHES = 3


def fnv1a32(name):
    h = 2166136261
    for b in name.encode("utf-8"):
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


def uniform(name, n):
    """n values in [-0.5, 0.5), as GoldenFill.Fill computes them."""
    i = np.arange(n, dtype=np.uint64)
    x = (i * np.uint64(0x9E3779B1) + np.uint64(fnv1a32(name))) & np.uint64(0xFFFFFFFF)
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x85EBCA6B)) & np.uint64(0xFFFFFFFF)
    x ^= x >> np.uint64(13)
    x = (x * np.uint64(0xC2B2AE35)) & np.uint64(0xFFFFFFFF)
    x ^= x >> np.uint64(16)
    return (x >> np.uint64(8)).astype(np.float64) / float(1 << 24) - 0.5


def build():
    torch.manual_seed(0)
    model = torchvision.models.googlenet(
        weights=None, num_classes=10, aux_logits=True, init_weights=True, transform_input=False)
    with torch.no_grad():
        for name, p in model.named_parameters():
            flat = p.view(-1)
            if flat.numel() > PERIOD:
                flat.copy_(flat[:PERIOD].repeat(flat.numel() // PERIOD + 1)[:flat.numel()])
            elif name.endswith("bn.weight"):
                p.add_(0.2 * torch.randn_like(p))
            elif name.endswith("bn.bias"):
                p.add_(0.1 * torch.randn_like(p))
        # Init gives std 0.01 classifiers, which leave the softmax nearly flat; this spreads the logits.
        model.fc.weight.mul_(20.0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(CALIBRATION_BATCHES):
            model(torch.randn(4, 3, 224, 224))
    model.eval()
    return model


def make_image():
    """A 400x300 picture with gradients and edges, so resizing and cropping both matter."""
    h, w = 300, 400
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 127.5 + 127.5 * np.sin(x / 23.0) * np.cos(y / 31.0)
    g = 255.0 * x / (w - 1)
    b = np.where((x - 220) ** 2 + (y - 140) ** 2 < 70 ** 2, 230.0, 40.0 + 150.0 * y / (h - 1))
    rgb = np.stack([r, g, b], axis=-1).round().clip(0, 255).astype(np.uint8)
    return Image.fromarray(rgb, "RGB")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    model = build()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    with gzip.GzipFile(os.path.join(here, "googlenet10.pth.gz"), "wb", mtime=0) as f:
        f.write(buffer.getvalue())

    image = make_image()
    image.save(os.path.join(here, "image.png"))
    Image.new("RGB", (40, 30), (200, 100, 50)).save(os.path.join(here, "solid.png"))
    preprocess = T.Compose([
        T.Resize(256),
        T.CenterCrop(224),
        T.ToTensor(),
        T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])
    normalize = T.Compose([T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    ten_crop = T.Compose([T.Resize(256), T.TenCrop(224), T.Lambda(lambda crops: torch.stack([normalize(c) for c in crops]))])
    with torch.no_grad():
        image_logits = model(preprocess(Image.open(os.path.join(here, "image.png")).convert("RGB")).unsqueeze(0))[0]
        ten_crop_logits = model(ten_crop(Image.open(os.path.join(here, "image.png")).convert("RGB")))
        fixed_shape = (2, 3, 224, 224)
        fixed = torch.from_numpy((uniform("interop.input", int(np.prod(fixed_shape))) * 4.0)
                                 .astype(np.float32).reshape(fixed_shape))
        fixed_logits = model(fixed)
    top = torch.topk(image_logits, 2)
    expected = {
        "classes": 10,
        "tensors": len(model.state_dict()),
        "parameters": sum(p.numel() for p in model.parameters()),
        "fixed_input": {"name": "interop.input", "shape": list(fixed_shape), "scale": 4.0},
        "fixed_logits": fixed_logits.reshape(-1).tolist(),
        "image_logits": image_logits.tolist(),
        "image_top1": int(top.indices[0]),
        "image_top1_margin": float(top.values[0] - top.values[1]),
        "image_ten_crop_probabilities": torch.softmax(ten_crop_logits, dim=1).mean(0).tolist(),
        "image_ten_crop_logits": ten_crop_logits.mean(0).tolist(),
    }
    with open(os.path.join(here, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    for name in ("googlenet10.pth.gz", "image.png", "solid.png", "expected.json"):
        print(name, os.path.getsize(os.path.join(here, name)))
    print("image logits", image_logits.tolist(), "margin", expected["image_top1_margin"])
    print("fixed logits", fixed_logits.tolist())


if __name__ == "__main__":
    main()
