#!/usr/bin/python3
"""Regenerates the GoogLeNet.Interop test fixtures.

Run with the system Python (Debian python3-torch 1.13):
    /usr/bin/python3 tests/GoogLeNet.Interop.Tests/Fixtures/make_fixtures.py

Writes, next to this script:
  state_dict.pth          torch.save of a small state_dict (float32 of several shapes, a transposed
                          view and an offset view saved with their strides, BatchNorm with int64
                          num_batches_tracked, float16/float64/bfloat16 tensors)
  wrapped.pth             {"state_dict": ..., "epoch": 3}
  legacy.pth              a one-tensor state_dict in the pre-1.6 (non-zip) format
  legacy_state_dict.pth   state_dict.pth's tensors in the pre-1.6 format
  dataparallel.pth        state_dict.pth's tensors with DataParallel's "module." key prefix
  whole_model.pth         torch.save of a whole nn.Linear module, not its state_dict
  malicious_os_system.pth a torch.save-shaped zip whose pickle calls os.system
  malicious_reduce.pth    the same, produced by pickling an object whose __reduce__ names os.system
  reference.safetensors   written by hand from the spec (python safetensors is not packaged here)
  expected.json           every tensor's dtype, shape and exact values
"""
import collections
import io
import json
import os
import pickle
import struct
import zipfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
PWNED = "/tmp/googlenet_interop_pwned"


def path(name):
    return os.path.join(HERE, name)


def make_state_dict():
    torch.manual_seed(20261125)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, kernel_size=3),
        torch.nn.BatchNorm2d(4),
        torch.nn.Flatten(),
        torch.nn.Linear(6, 5),
    )
    # Make the BatchNorm buffers non-trivial.
    with torch.no_grad():
        model[1].running_mean.copy_(torch.randn(4))
        model[1].running_var.copy_(torch.rand(4) + 0.5)
        model[1].num_batches_tracked.fill_(1234567890123)
    sd = model.state_dict()
    # A transposed view keeps the strides of its base when saved.
    base = torch.randn(6, 5)
    sd["3.weight"] = base.t()
    assert not sd["3.weight"].is_contiguous()
    # A view with a storage offset and a non-unit row stride.
    grid = torch.randn(4, 7)
    sd["extra.window"] = grid[1:, 2:5]
    assert sd["extra.window"].storage_offset() == 9
    sd["extra.half"] = torch.randn(2, 3).half()
    sd["extra.double"] = torch.randn(3).double()
    sd["extra.bfloat16"] = torch.randn(5).bfloat16()
    sd["extra.scalar"] = torch.tensor(2.5)
    sd["extra.empty"] = torch.zeros(0, 3)
    return sd


def describe(t):
    dtype = {
        torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
        torch.float64: "F64", torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8",
    }[t.dtype]
    return {
        "dtype": dtype,
        "shape": list(t.shape),
        # float32 values print exactly as Python floats; wider types are rounded to float32 here,
        # exactly as the reader converts them.
        "values": [float(v) for v in t.reshape(-1).to(torch.float32).tolist()]
        if t.dtype != torch.int64 else [float(torch.tensor(v, dtype=torch.float32)) for v in t.reshape(-1).tolist()],
    }


def write_torch_like_zip(file_name, archive, pickle_bytes):
    with zipfile.ZipFile(path(file_name), "w", zipfile.ZIP_STORED) as z:
        z.writestr(archive + "/data.pkl", pickle_bytes)
        z.writestr(archive + "/version", b"3\n")


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > " + PWNED,))


def write_safetensors(file_name, tensors, metadata):
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    blobs = []
    offset = 0
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    # The reference writer pads the header with spaces to a multiple of 8 bytes.
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path(file_name), "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def main():
    expected = {}

    sd = make_state_dict()
    torch.save(sd, path("state_dict.pth"))
    expected["state_dict.pth"] = {"order": list(sd.keys()), "tensors": {k: describe(v) for k, v in sd.items()}}

    torch.save({"state_dict": sd, "epoch": 3}, path("wrapped.pth"))
    expected["wrapped.pth"] = expected["state_dict.pth"]

    small = collections.OrderedDict(w=torch.arange(6, dtype=torch.float32).reshape(2, 3))
    torch.save(small, path("legacy.pth"), _use_new_zipfile_serialization=False)
    expected["legacy.pth"] = {"order": ["w"], "tensors": {"w": describe(small["w"])}}

    # The format torchvision's older pretrained weights were saved in (PyTorch < 1.6).
    torch.save(sd, path("legacy_state_dict.pth"), _use_new_zipfile_serialization=False)
    expected["legacy_state_dict.pth"] = expected["state_dict.pth"]

    # What a model wrapped in DataParallel saves: every key under "module.".
    torch.save(collections.OrderedDict(("module." + k, v) for k, v in sd.items()), path("dataparallel.pth"))
    expected["dataparallel.pth"] = expected["state_dict.pth"]

    # torch.save(model) instead of torch.save(model.state_dict()).
    torch.manual_seed(3)
    torch.save(torch.nn.Linear(2, 3), path("whole_model.pth"))

    # Written by hand so the global reads exactly 'os system', as an attacker on any OS would write it.
    cmd = ("echo pwned > " + PWNED).encode("utf-8")
    payload = (b"\x80\x02}q\x00X\x06\x00\x00\x00weightq\x01cos\nsystem\nq\x02"
               + b"X" + struct.pack("<I", len(cmd)) + cmd + b"\x85q\x03Rq\x04s.")
    write_torch_like_zip("malicious_os_system.pth", "malicious_os_system", payload)

    payload = pickle.dumps(collections.OrderedDict(weight=Evil()), protocol=2)
    write_torch_like_zip("malicious_reduce.pth", "malicious_reduce", payload)

    torch.manual_seed(7)
    f32 = torch.randn(3, 4)
    f16 = torch.randn(5).half()
    bf16 = torch.randn(2, 2).bfloat16()
    f64 = torch.randn(3).double()
    i64 = torch.tensor([0, -1, 1 << 40, 42], dtype=torch.int64)
    u8 = torch.tensor([0, 7, 255], dtype=torch.uint8)
    i32 = torch.tensor([-5, 6], dtype=torch.int32)
    scalar = torch.tensor(1.25)
    empty = torch.zeros(2, 0)

    def raw(t):
        if t.dtype == torch.bfloat16:
            return t.view(torch.int16).numpy().tobytes()
        return t.numpy().tobytes()

    st = [
        ("layer.weight", "F32", [3, 4], raw(f32)),
        ("layer.half", "F16", [5], raw(f16)),
        ("layer.bf16", "BF16", [2, 2], raw(bf16)),
        ("layer.double", "F64", [3], raw(f64)),
        ("bn.num_batches_tracked", "I64", [4], raw(i64)),
        ("mask", "U8", [3], raw(u8)),
        ("ints", "I32", [2], raw(i32)),
        ("scalar", "F32", [], raw(scalar)),
        ("empty", "F32", [2, 0], raw(empty)),
    ]
    write_safetensors("reference.safetensors", st, {"format": "pt", "epoch": "3"})
    tensors = {"layer.weight": f32, "layer.half": f16, "layer.bf16": bf16, "layer.double": f64,
               "bn.num_batches_tracked": i64, "mask": u8, "ints": i32, "scalar": scalar, "empty": empty}
    expected["reference.safetensors"] = {
        "order": [t[0] for t in st],
        "metadata": {"format": "pt", "epoch": "3"},
        "tensors": {k: describe(v) for k, v in tensors.items()},
    }

    with open(path("expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
