#!/usr/bin/python3
"""Writes the decoder and transform fixtures of GoogLeNet.Data.Tests.

Run with Debian's python3 (python3-pil, python3-torchvision) from this folder:
    /usr/bin/python3 make_fixtures.py
Reference decodes are PIL's; reference resizes are torchvision's transforms on PIL images.
Synthetic inputs come from integer formulas that the C# tests reproduce (SyntheticImages.cs),
so only the small encoded images and the expected outputs are stored.
"""
import gzip
import os

import numpy as np
from PIL import Image
import torchvision.transforms as T
import torchvision.transforms.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))


def gray28():
    y, x = np.mgrid[0:28, 0:28]
    return ((x * 37 + y * 91 + ((x * y) % 17) * 5) % 256).astype(np.uint8)


def rgb300x200():
    """CHW, 3 x 200 x 300."""
    y, x = np.mgrid[0:200, 0:300]
    planes = [(x * (3 + c) + y * (5 - c) + (x // 7) * (y // 5) * c) % 256 for c in range(3)]
    return np.stack(planes).astype(np.uint8)


def photo(width, height):
    """A smooth image with some edges, HWC, for the codecs."""
    y, x = np.mgrid[0:height, 0:width]
    r = 128 + 100 * np.sin(x / 5.0) * np.cos(y / 7.0)
    g = (x * 255.0 / width)
    b = np.where((x // 6 + y // 6) % 2 == 0, 40, 220)
    return np.stack([r, g, b], axis=-1).clip(0, 255).astype(np.uint8)


def write_gz(name, array):
    with gzip.GzipFile(os.path.join(HERE, name), "wb", mtime=0) as f:
        f.write(np.ascontiguousarray(array).tobytes())


def chw(pil_image):
    return np.asarray(pil_image).transpose(2, 0, 1)


def codecs():
    rgb = Image.fromarray(photo(37, 23), "RGB")
    rgb.save(os.path.join(HERE, "photo.jpg"), quality=90)
    rgb.save(os.path.join(HERE, "photo_progressive.jpg"), quality=75, progressive=True)
    rgb.convert("L").save(os.path.join(HERE, "gray.jpg"), quality=90)
    rgb.save(os.path.join(HERE, "rgb.png"))
    rgb.convert("L").save(os.path.join(HERE, "gray.png"))
    rgb.quantize(colors=16).save(os.path.join(HERE, "palette.png"))
    rgba = rgb.copy()
    rgba.putalpha(Image.fromarray(photo(37, 23)[:, :, 1], "L"))
    rgba.save(os.path.join(HERE, "rgba.png"))
    palette = rgb.quantize(colors=16)
    palette.info["transparency"] = 3
    palette.save(os.path.join(HERE, "palette_transparent.png"), transparency=3)
    for name in ["photo.jpg", "photo_progressive.jpg", "gray.jpg", "rgb.png", "gray.png", "palette.png",
                 "rgba.png", "palette_transparent.png"]:
        decoded = Image.open(os.path.join(HERE, name)).convert("RGB")
        with open(os.path.join(HERE, name + ".rgb"), "wb") as f:
            f.write(np.asarray(decoded).tobytes())


def resizes():
    small = Image.fromarray(gray28(), "L")
    write_gz("resize_28_to_96.bin.gz", np.asarray(T.Resize(96)(small)))

    large = Image.fromarray(rgb300x200().transpose(1, 2, 0), "RGB")
    eval_transform = T.Compose([T.Resize(256), T.CenterCrop(224)])
    write_gz("resize256_crop224.bin.gz", chw(eval_transform(large)))
    write_gz("resize_300x200_to_64.bin.gz", chw(T.Resize(64)(large)))
    write_gz("resized_crop_17_23_150x201_to_64.bin.gz", chw(F.resized_crop(large, 17, 23, 150, 201, [64, 64])))


if __name__ == "__main__":
    codecs()
    resizes()
