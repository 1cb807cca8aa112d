"""Pre/post-processing of the image_classification ensemble: plain functions on whole batches.

preprocess reproduces Open-NSFW's training-time pipeline (resize to 256 bilinear, a JPEG round
trip, centre crop 224, RGB->BGR, minus the Caffe channel means) with Pillow and numpy."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

CROP, RESIZE = 224, 256
BGR_MEAN = np.array([104.0, 117.0, 123.0], dtype=np.float32)
K = 2


def _one(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        rgb = image.convert("RGB")
    resized = rgb.resize((RESIZE, RESIZE), resample=Image.BILINEAR)
    buffer = io.BytesIO()
    resized.save(buffer, format="JPEG")
    buffer.seek(0)
    decoded = np.asarray(Image.open(buffer).convert("RGB"), dtype=np.float32)
    off = (RESIZE - CROP) // 2
    return decoded[off:off + CROP, off:off + CROP, ::-1] - BGR_MEAN


def preprocess(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """image [batch, 1] encoded bytes -> pixels [batch, 224, 224, 3] FP32 (BGR, mean-subtracted)."""
    images = [bytes(b) for b in inputs["image"].reshape(-1)]
    return {"pixels": np.stack([_one(b) for b in images]).astype(np.float32)}


def top_k(inputs: dict[str, np.ndarray], resources: Path) -> dict[str, np.ndarray]:
    """probabilities [batch, classes] (the model ends in a softmax) -> the K best labels and scores."""
    labels = np.array((resources / "labels.txt").read_text().split(), dtype=object)
    probs = inputs["probabilities"].astype(np.float32)
    order = np.argsort(-probs, axis=1, kind="stable")[:, :K]
    return {"labels": np.array([[labels[i].encode() for i in row] for row in order], dtype=object),
            "scores": np.take_along_axis(probs, order, axis=1)}


def make_image(seed: int, size: tuple[int, int], fmt: str) -> bytes:
    """A real encoded image (gradients + shapes) for examples and tests."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)),
                     np.full_like(xx, int(rng.integers(0, 256)))], axis=-1).astype(np.uint8)
    image = Image.fromarray(base)
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
        color = tuple(int(c) for c in rng.integers(0, 256, size=3))
        draw.ellipse([x0, y0, x0 + w // 3, y0 + h // 3], fill=color)
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def example_inputs(variant: int) -> dict[str, np.ndarray]:
    """Build-time examples: one PNG, then a JPEG and a PNG of other sizes."""
    if variant == 0:
        images = [make_image(0, (320, 240), "PNG")]
    else:
        images = [make_image(1, (640, 480), "JPEG"), make_image(2, (200, 300), "PNG")]
    return {"image": np.array([[b] for b in images], dtype=object)}
