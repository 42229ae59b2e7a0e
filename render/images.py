"""Tensors to image bytes. PNG encoding here is deterministic, so equal tensors give equal content hashes."""

from __future__ import annotations

import io

import torch
from PIL import Image


def to_png(image: torch.Tensor) -> bytes:
    """[3, H, W] floats in [0, 1] to PNG bytes."""
    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
