"""Labelled 64x64 RGB images made offline: procedural patterns plus crops of scikit-image's bundled photos.

Two splits that never overlap: procedural images come from disjoint seeds, photo crops from disjoint columns of each
photo (the left 75% trains, the right 25% tests), so held-out accuracy means generalisation, not memorisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

SIZE = 64
PATTERNS = ("grating_0", "grating_45", "grating_90", "grating_135", "checkerboard", "dots", "rings", "blobs")
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "brick", "grass",
          "gravel")
CLASSES = PATTERNS + PHOTOS
TRAIN_FRACTION = 0.75  # of each photo's width
SPLIT_SEED_OFFSET = {"train": 0, "test": 1_000_003}


@dataclass(frozen=True)
class Batch:
    images: np.ndarray  # [N, 64, 64, 3] uint8
    labels: np.ndarray  # [N] int64 index into CLASSES


def _two_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    a, b = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    while np.abs(a - b).sum() < 0.6:  # keep the pattern visible
        b = rng.uniform(0, 1, 3)
    return a, b


def _grid() -> tuple[np.ndarray, np.ndarray]:
    return np.meshgrid(np.arange(SIZE, dtype=np.float32), np.arange(SIZE, dtype=np.float32), indexing="xy")


def _mask(name: str, rng: np.random.Generator) -> np.ndarray:
    """A [64, 64] map in [0, 1] for one procedural class."""
    x, y = _grid()
    if name.startswith("grating_"):
        theta = np.deg2rad(float(name.split("_")[1]) + rng.uniform(-8, 8))
        period = rng.uniform(5, 14)
        u = x * np.cos(theta) + y * np.sin(theta)
        return 0.5 + 0.5 * np.sin(2 * np.pi * u / period + rng.uniform(0, 2 * np.pi))
    if name == "checkerboard":
        cell = rng.uniform(4, 12)
        ox, oy = rng.uniform(0, cell, 2)
        return (((x + ox) // cell + (y + oy) // cell) % 2).astype(np.float32)
    if name == "dots":
        m = np.zeros((SIZE, SIZE), np.float32)
        r = rng.uniform(2, 5)
        for cx, cy in rng.uniform(0, SIZE, (int(rng.integers(6, 20)), 2)):
            m[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = 1.0
        return m
    if name == "rings":
        cx, cy = rng.uniform(8, SIZE - 8, 2)
        period = rng.uniform(5, 12)
        return 0.5 + 0.5 * np.sin(2 * np.pi * np.hypot(x - cx, y - cy) / period)
    if name == "blobs":
        coarse = rng.uniform(0, 1, (4, 4)).astype(np.float32)
        return np.asarray(Image.fromarray(coarse, mode="F").resize((SIZE, SIZE), Image.BICUBIC)).clip(0, 1)
    raise ValueError(f"unknown pattern {name!r}")


def pattern_image(name: str, rng: np.random.Generator) -> np.ndarray:
    a, b = _two_colours(rng)
    m = _mask(name, rng)[..., None]
    img = a * (1 - m) + b * m + rng.normal(0, 0.03, (SIZE, SIZE, 3))
    return (img.clip(0, 1) * 255).astype(np.uint8)


def load_photos() -> dict[str, np.ndarray]:
    """The bundled photos as RGB uint8 arrays (grayscale ones repeated to three channels)."""
    import skimage.data

    photos = {}
    for name in PHOTOS:
        img = getattr(skimage.data, name)()
        photos[name] = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]
    return photos


def photo_crop(photo: np.ndarray, split: str, rng: np.random.Generator) -> np.ndarray:
    h, w, _ = photo.shape
    cut = int(w * TRAIN_FRACTION)
    x0, x1 = (0, cut) if split == "train" else (cut, w)
    side = int(rng.integers(40, min(x1 - x0, h, 160) + 1))
    left = int(rng.integers(x0, x1 - side + 1))
    top = int(rng.integers(0, h - side + 1))
    crop = Image.fromarray(photo[top:top + side, left:left + side]).resize((SIZE, SIZE), Image.BILINEAR)
    out = np.asarray(crop)
    return out[:, ::-1] if rng.random() < 0.5 else out


def make_batch(n: int, split: str, seed: int, photos: dict[str, np.ndarray] | None = None) -> Batch:
    """``n`` images with balanced labels; the same (n, split, seed) always gives the same bytes."""
    if split not in SPLIT_SEED_OFFSET:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    photos = photos if photos is not None else load_photos()
    rng = np.random.default_rng(seed + SPLIT_SEED_OFFSET[split])
    labels = np.arange(n) % len(CLASSES)
    rng.shuffle(labels)
    images = np.empty((n, SIZE, SIZE, 3), np.uint8)
    for i, label in enumerate(labels):
        name = CLASSES[label]
        images[i] = pattern_image(name, rng) if name in PATTERNS else photo_crop(photos[name], split, rng)
    return Batch(images, labels.astype(np.int64))
