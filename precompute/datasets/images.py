"""The images a vision model's units are ranked on: a user's folder (``--dataset PATH``) or a model's built-in set.

A folder is read the way torchvision's ImageFolder lays it out (one subfolder per class, images anywhere below it) or
flat (images directly in it), JPEG and PNG. It is checked without torch before anything is written: a missing path,
a file, a folder without images or one that mixes both layouts is refused with a message saying what was found. A
file that looks like an image and cannot be read is skipped and counted; one that fails to decode later, during the
examples pass, is skipped there and said in the job's log.

Every image becomes the model's input the way its registry entry says (``precompute.registry.Preprocess``): shorter
side resized, centre crop, values in [0, 1]; the model sees them mapped to its value range. The [0, 1] image is what
the atlas stores.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from precompute.registry import Preprocess
from store.keys import DatasetKey

SUFFIXES = (".jpg", ".jpeg", ".png")
# What Pillow raises for a file that is not an image it can decode (truncated, corrupt, another format)
UNREADABLE = (OSError, UnidentifiedImageError, SyntaxError, ValueError)
log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A dataset that cannot be used, with what is wrong with it."""


def prepare(picture: Image.Image, preprocess: Preprocess) -> np.ndarray:
    """A PIL image as the model's [size, size, 3] uint8 input, before its value range: shorter side resized, centre
    crop."""
    picture = picture.convert("RGB")
    scale = preprocess.resize / min(picture.size)
    if (width := round(picture.width * scale), height := round(picture.height * scale)) != picture.size:
        picture = picture.resize((width, height), Image.BILINEAR, reducing_gap=3.0)
    left, top = (picture.width - preprocess.size) // 2, (picture.height - preprocess.size) // 2
    return np.array(picture.crop((left, top, left + preprocess.size, top + preprocess.size)))


def load(path: Path, preprocess: Preprocess) -> np.ndarray:
    """One image file as the model's input, [size, size, 3] uint8; raises one of ``UNREADABLE`` if it cannot be."""
    with Image.open(path) as picture:
        return prepare(picture, preprocess)


@dataclass
class ImageDataset:
    """``len(items)`` images, read by position. ``read(positions)`` gives [n, size, size, 3] uint8 and the positions
    it could read (a file that fails to decode is dropped and logged)."""

    name: str
    source: str
    layout: str  # DatasetKey.LAYOUT
    items: list[str]  # each image's name: a relative path, or ``split/index``
    sha256: str
    reader: Callable[[list[int]], tuple[np.ndarray, list[int]]]
    skipped: list[str] = field(default_factory=list)  # unreadable files found while scanning

    def __len__(self) -> int:
        return len(self.items)

    def read(self, positions: list[int]) -> tuple[np.ndarray, list[int]]:
        return self.reader(positions)

    def batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, list[int]]]:
        """The whole dataset in order, ``batch_size`` images at a time (fewer where files failed to decode)."""
        for start in range(0, len(self.items), batch_size):
            images, read = self.reader(list(range(start, min(start + batch_size, len(self.items)))))
            if read:
                yield images, read

    def provenance(self) -> dict:
        """What goes on the run (``runs.config["dataset"]``)."""
        return {DatasetKey.NAME: self.name, DatasetKey.SOURCE: self.source, DatasetKey.LAYOUT: self.layout,
                DatasetKey.IMAGES: len(self.items), DatasetKey.SKIPPED: len(self.skipped),
                DatasetKey.SHA256: self.sha256}


def to_tensor(images: np.ndarray):
    """[n, size, size, 3] uint8 to a tensor [n, 3, size, size] of floats in [0, 1] (torch imported here: scanning a
    folder needs none)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(255)


def in_memory(name: str, split: str, images: np.ndarray) -> ImageDataset:
    """A built-in dataset held as an array [n, size, size, 3] uint8, its items named ``split/index``."""
    return ImageDataset(name=name, source="built-in", layout="built-in",
                        items=[f"{split}/{index}" for index in range(len(images))],
                        sha256=hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest(),
                        reader=lambda positions: (images[positions], positions))


def _images_below(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())


def scan_folder(root: Path, preprocess: Preprocess) -> ImageDataset:
    """A folder of images, checked: every candidate's header is read (and a PNG's checksums verified), the readable
    ones hashed in path order. Raises DatasetError with what is wrong."""
    if not root.exists():
        raise DatasetError(f"dataset folder {root} does not exist")
    if not root.is_dir():
        raise DatasetError(f"dataset {root} is a file; give a folder of JPEG or PNG images (flat, or one subfolder "
                           f"per class)")
    flat = sorted(p for p in root.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file())
    classes = [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    nested = [image for folder in classes for image in _images_below(folder)]
    if flat and nested:
        raise DatasetError(f"dataset folder {root} has images both directly in it ({len(flat)}) and in subfolders "
                           f"({len(nested)}); use one layout: flat, or one subfolder per class")
    candidates = flat or nested
    if not candidates:
        raise DatasetError(f"no JPEG or PNG images in {root} (looked directly in it and in its subfolders)")
    digest, readable, skipped = hashlib.sha256(), [], []
    for path in candidates:
        relative = path.relative_to(root).as_posix()
        try:
            with Image.open(path) as picture:
                picture.verify()
        except UNREADABLE:
            skipped.append(relative)
            continue
        digest.update(relative.encode() + b"\0" + path.read_bytes())
        readable.append(relative)
    if not readable:
        raise DatasetError(f"none of the {len(candidates)} images in {root} could be read")

    def read(positions: list[int]) -> tuple[np.ndarray, list[int]]:
        images, read_ok = [], []
        for position in positions:
            try:
                images.append(load(root / readable[position], preprocess))
            except UNREADABLE as exc:
                log.warning("skipping image %s that failed to decode: %s", readable[position], exc)
                continue
            read_ok.append(position)
        empty = np.zeros((0, preprocess.size, preprocess.size, 3), np.uint8)
        return (np.stack(images) if images else empty), read_ok

    return ImageDataset(name=root.resolve().name, source=str(root.resolve()), layout="classes" if nested else "flat",
                        items=readable, sha256=digest.hexdigest(), reader=read, skipped=skipped)
