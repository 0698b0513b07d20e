#!/usr/bin/python3
"""Reference outputs from PyTorch for the engine's golden tests.

Run from this folder with Debian's PyTorch: /usr/bin/python3 make_golden.py
Inputs and weights are not stored: both sides fill them from the same integer hash of the
parameter's name (see `fill`, mirrored by GoldenFill.cs), so only outputs are written.
Output: layers.json (per-layer cases) and models/*.bin + models.json (whole networks).
"""
import json
import os
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.models.googlenet import Inception as TorchvisionInception

torch.set_num_threads(1)
SIZE_CAP = 2_000_000  # bytes per written array: golden fixtures stay small


def fnv1a32(name):
    h = 2166136261
    for b in name.encode("utf-8"):
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


def uniform(name, n):
    """n values in [-0.5, 0.5), exactly as GoldenFill.Uniform computes them."""
    i = np.arange(n, dtype=np.uint64)
    x = (i * np.uint64(0x9E3779B1) + np.uint64(fnv1a32(name))) & np.uint64(0xFFFFFFFF)
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x85EBCA6B)) & np.uint64(0xFFFFFFFF)
    x ^= x >> np.uint64(13)
    x = (x * np.uint64(0xC2B2AE35)) & np.uint64(0xFFFFFFFF)
    x ^= x >> np.uint64(16)
    return (x >> np.uint64(8)).astype(np.float64) / float(1 << 24) - 0.5


def fill(name, shape, scale, shift=0.0):
    n = int(np.prod(shape)) if len(shape) else 1
    return torch.from_numpy((uniform(name, n) * scale + shift).astype(np.float32).reshape(shape))


def param_fill(name, shape):
    """Weights He-scaled by fan-in, small biases, BatchNorm statistics near identity."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "weight" and len(shape) > 1:
        fan_in = int(np.prod(shape[1:]))
        # Classifiers are scaled down so logits stay O(1): a saturated softmax would make the
        # input gradient depend on rounding in the logits.
        classifier = 0.02 if name.endswith("fc.weight") or name.endswith("fc2.weight") else 1.0
        return fill(name, shape, classifier * 2.0 * np.sqrt(6.0 / fan_in))
    if leaf == "weight":  # BatchNorm scale
        return fill(name, shape, 0.4, 1.0)
    if leaf == "running_var":
        return fill(name, shape, 0.5, 0.75)
    if leaf == "num_batches_tracked":
        return torch.tensor(0)
    return fill(name, shape, 0.2)  # biases, running_mean


def fill_module(module):
    with torch.no_grad():
        for name, t in module.state_dict().items():
            t.copy_(param_fill(name, tuple(t.shape)).to(t.dtype))


def flat(t):
    return [float(v) for v in t.detach().reshape(-1).tolist()]


layers = {}


def case(name, module, input_shape, train=False, extra=None):
    """Forward output, input gradient and parameter gradients of sum(output * g) for a seeded g."""
    fill_module(module)
    module.train(train)
    x = fill(name + ".input", input_shape, 4.0).requires_grad_(True)
    y = module(x)
    g = fill(name + ".dout", tuple(y.shape), 2.0)
    (y * g).sum().backward()
    entry = {"train": train, "input": list(input_shape), "output_shape": list(y.shape), "output": flat(y), "dinput": flat(x.grad),
             "grads": {n: flat(p.grad) for n, p in module.named_parameters()},
             "state": {n: flat(t) for n, t in module.state_dict().items()}}
    entry.update(extra or {})
    layers[name] = entry


case("conv_3x3_s2_p1", nn.Conv2d(3, 4, 3, stride=2, padding=1), (2, 3, 9, 7))
case("conv_1x1_nobias", nn.Conv2d(5, 6, 1, bias=False), (2, 5, 4, 3))
case("conv_7x7_s2_p3", nn.Conv2d(2, 3, 7, stride=2, padding=3), (1, 2, 11, 10))
case("conv_5x5_p2", nn.Conv2d(3, 2, 5, padding=2), (2, 3, 6, 5))
case("maxpool_3_2_ceil", nn.MaxPool2d(3, 2, ceil_mode=True), (2, 3, 8, 7))
case("maxpool_3_1_p1_ceil", nn.MaxPool2d(3, 1, padding=1, ceil_mode=True), (1, 2, 5, 6))
case("maxpool_3_2_p1", nn.MaxPool2d(3, 2, padding=1), (1, 2, 9, 8))
case("maxpool_2_2_ceil", nn.MaxPool2d(2, 2, ceil_mode=True), (1, 3, 7, 7))
case("avgpool_5_3_ceil", nn.AvgPool2d(5, 3, ceil_mode=True), (1, 2, 14, 13))
case("avgpool_3_2_p1_ceil", nn.AvgPool2d(3, 2, padding=1, ceil_mode=True), (1, 2, 8, 7))
case("avgpool_3_2_p1_ceil_nopad", nn.AvgPool2d(3, 2, padding=1, ceil_mode=True, count_include_pad=False), (1, 2, 8, 7))
case("adaptive_4x4_from_7x7", nn.AdaptiveAvgPool2d((4, 4)), (2, 3, 7, 7))
case("adaptive_4x4_from_3x5", nn.AdaptiveAvgPool2d((4, 4)), (1, 2, 3, 5))
case("adaptive_1x1", nn.AdaptiveAvgPool2d((1, 1)), (2, 3, 5, 4))
case("lrn_5", nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0), (2, 7, 3, 4))
case("lrn_4_strong", nn.LocalResponseNorm(4, alpha=0.5, beta=0.6, k=2.0), (1, 6, 3, 3))
case("batchnorm_train", nn.BatchNorm2d(4, eps=1e-3), (3, 4, 5, 3), train=True)
case("batchnorm_eval", nn.BatchNorm2d(4, eps=1e-3), (3, 4, 5, 3), train=False)
case("linear", nn.Linear(7, 5), (3, 7))
case("relu", nn.ReLU(), (2, 3, 4, 5))

# Softmax cross-entropy: loss and gradient, plain and label-smoothed.
logits = fill("ce.logits", (4, 6), 8.0).requires_grad_(True)
labels = torch.tensor([0, 5, 2, 2])
for smoothing in (0.0, 0.1):
    logits.grad = None
    loss = F.cross_entropy(logits, labels, label_smoothing=smoothing)
    loss.backward()
    layers[f"cross_entropy_{smoothing}"] = {"input": [4, 6], "labels": labels.tolist(), "smoothing": smoothing,
                                            "loss": float(loss), "dinput": flat(logits.grad)}


# Whole networks. d2l and paper are written here from their definitions (seed 004 and BVLC's
# prototxt) with the project's module names; torchvision's is its own class.
class Conv(nn.Module):
    def __init__(self, cin, cout, k, stride=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)

    def forward(self, x):
        return F.relu(self.conv(x))


class Block(nn.Module):
    def __init__(self, cin, c1, c3r, c3, c5r, c5, pp, ceil):
        super().__init__()
        self.branch1 = Conv(cin, c1, 1)
        self.branch2 = nn.Sequential(Conv(cin, c3r, 1), Conv(c3r, c3, 3))
        self.branch3 = nn.Sequential(Conv(cin, c5r, 1), Conv(c5r, c5, 5))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=ceil), Conv(cin, pp, 1))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


TABLE1 = [("3a", 192, 64, 96, 128, 16, 32, 32), ("3b", 256, 128, 128, 192, 32, 96, 64),
          ("4a", 480, 192, 96, 208, 16, 48, 64), ("4b", 512, 160, 112, 224, 24, 64, 64),
          ("4c", 512, 128, 128, 256, 24, 64, 64), ("4d", 512, 112, 144, 288, 32, 64, 64),
          ("4e", 528, 256, 160, 320, 32, 128, 128), ("5a", 832, 256, 160, 320, 32, 128, 128),
          ("5b", 832, 384, 192, 384, 48, 128, 128)]


class Plain(nn.Module):
    """d2l (paper=False) or BVLC (paper=True) GoogLeNet, inference path, no aux heads."""

    def __init__(self, paper, in_channels, classes):
        super().__init__()
        self.paper = paper
        self.conv1 = Conv(in_channels, 64, 7, 2)
        self.conv2 = Conv(64, 64, 1)
        self.conv3 = Conv(64, 192, 3)
        for name, *spec in TABLE1:
            setattr(self, "inception" + name, Block(*spec, ceil=paper))
        self.fc = nn.Linear(1024, classes)

    def pool(self, x):
        return F.max_pool2d(x, 3, 2, ceil_mode=True) if self.paper else F.max_pool2d(x, 3, 2, padding=1)

    def forward(self, x):
        lrn = (lambda t: F.local_response_norm(t, 5, 1e-4, 0.75, 1.0)) if self.paper else (lambda t: t)
        x = lrn(self.pool(self.conv1(x)))
        x = self.pool(lrn(self.conv3(self.conv2(x))))
        x = self.pool(self.inception3b(self.inception3a(x)))
        for b in ("4a", "4b", "4c", "4d", "4e"):
            x = getattr(self, "inception" + b)(x)
        x = self.pool(x)
        x = self.inception5b(self.inception5a(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


os.makedirs("models", exist_ok=True)
models = {}


def save(prefix, name, t):
    data = t.detach().contiguous().float().numpy().astype("<f4").tobytes()
    assert len(data) <= SIZE_CAP, f"{prefix}.{name} is {len(data)} bytes, over the cap"
    with open(f"models/{prefix}.{name}.bin", "wb") as f:
        f.write(data)
    return list(t.shape)


def model_case(key, net, input_shape, train=False, grads=("conv1.conv.weight", "fc.weight")):
    # Whole networks run in float64 from the same float32 weights and inputs: PyTorch's own
    # float32 result is 2e-4 (scaled) away from the exact one on conv1's gradient at 224, which
    # would otherwise eat the tolerance.
    fill_module(net)
    net = net.double()
    net.train(train)
    x = fill(key + ".input", input_shape, 2.0).double().requires_grad_(True)
    out = net(x)
    labels = torch.tensor([i % 10 for i in range(input_shape[0])])
    if isinstance(out, tuple):
        # torchvision 0.14 labels its outputs (logits, aux_logits2, aux_logits1), but _forward's
        # return order and forward's unpacking swap twice: position 1 is the head on 4a.
        logits, aux1, aux2 = out
        loss = F.cross_entropy(logits, labels) + 0.3 * F.cross_entropy(aux1, labels) + 0.3 * F.cross_entropy(aux2, labels)
    else:
        logits, aux1, aux2 = out, None, None
        loss = F.cross_entropy(logits, labels)
    loss.backward()
    entry = {"input": list(input_shape), "train": train, "labels": labels.tolist(), "loss": float(loss),
             "logits": save(key, "logits", logits), "dinput": save(key, "dinput", x.grad)}
    if aux1 is not None:
        entry["aux1"] = save(key, "aux1", aux1)
        entry["aux2"] = save(key, "aux2", aux2)
    params = dict(net.named_parameters())
    entry["grads"] = {g: save(key, "grad." + g, params[g].grad) for g in grads}
    if train:
        entry["running_mean"] = save(key, "conv1.bn.running_mean", net.state_dict()["conv1.bn.running_mean"]) \
            if "conv1.bn.running_mean" in net.state_dict() else None
    models[key] = entry


def torchvision_net(aux):
    return torchvision.models.GoogLeNet(num_classes=10, aux_logits=aux, transform_input=False, init_weights=False,
                                        dropout=0.0, dropout_aux=0.0)


model_case("torchvision_eval_112", torchvision_net(False), (2, 3, 112, 112))
model_case("torchvision_eval_224", torchvision_net(False), (1, 3, 224, 224))
model_case("torchvision_train_aux_96", torchvision_net(True), (3, 3, 96, 96), train=True)
model_case("d2l_96", Plain(False, 1, 10), (2, 1, 96, 96))
model_case("paper_eval_112", Plain(True, 3, 10), (2, 3, 112, 112))

# One Inception block (torchvision's, with BatchNorm, in training) at small channel counts.
block = TorchvisionInception(8, 4, 3, 5, 2, 3, 2)
case("inception_torchvision_train", block, (2, 8, 6, 5), train=True)
from torchvision.models.googlenet import InceptionAux as TorchvisionAux
case("aux_torchvision_train_6x6", TorchvisionAux(8, 10, dropout=0.0), (3, 8, 6, 6), train=True)
block5 = Block(8, 4, 3, 5, 2, 3, 2, ceil=True)
case("inception_paper", block5, (2, 8, 6, 5))

# Ten SGD steps (momentum 0.9) on a fixed batch, in float64. The BatchNorm preset is left out:
# with batch statistics over a few 2x2 maps its trajectory is chaotic (PyTorch's own float32 run
# leaves its float64 one by 1-3% within ten steps), so it could not tell a bug from rounding.
def run_steps(key, make, input_shape, lr, dtype):
    net = make()
    fill_module(net)
    net = net.to(dtype)
    net.train(True)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    x = fill(key + ".input", input_shape, 2.0).to(dtype)
    labels = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6][:input_shape[0]])
    losses = []
    for step in range(10):
        opt.zero_grad()
        loss = F.cross_entropy(net(x), labels)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    return losses, labels


def trajectory(key, make, input_shape, lr):
    losses, labels = run_steps(key, make, input_shape, lr, torch.float64)
    single, _ = run_steps(key, make, input_shape, lr, torch.float32)
    spread = max(abs(a - b) / b for a, b in zip(single, losses))
    models[key] = {"input": list(input_shape), "labels": labels.tolist(), "lr": lr, "momentum": 0.9, "losses": losses,
                   "pytorch_float32_spread": spread}
    print(key, [round(v, 4) for v in losses], "PyTorch float32 vs float64:", spread)


trajectory("trajectory_d2l", lambda: Plain(False, 1, 10), (4, 1, 64, 64), 0.002)
trajectory("trajectory_paper", lambda: Plain(True, 3, 10), (4, 3, 64, 64), 0.002)

# torchvision's exact state_dict names and shapes (1000 classes, aux heads), for the naming test.
models["torchvision_state_dict"] = [[k, list(v.shape)] for k, v in
                                    torchvision.models.GoogLeNet(aux_logits=True, init_weights=False).state_dict().items()]

with open("layers.json", "w") as f:
    json.dump(layers, f)
with open("models.json", "w") as f:
    json.dump(models, f, indent=1)
