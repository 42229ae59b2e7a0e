"""A user's own vision model, as `atlascope precompute --model tests.user_model:small_cnn` imports it."""

from __future__ import annotations

from torch import nn


class Block(nn.Sequential):
    def __init__(self, c_in: int, c_out: int):
        super().__init__(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2))


def small_cnn() -> nn.Module:
    """Three conv blocks (8, 16, 24 channels) and a linear head over 10 classes."""
    return nn.Sequential(nn.Sequential(Block(3, 8), Block(8, 16), Block(16, 24)), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(24, 10))
