"""TinyVision: a four-block CNN for 64x64 RGB images in [0, 1], trained on ``precompute.datasets.patterns``.

Each block is conv -> batchnorm -> ReLU; its output (post-ReLU) is the layer the atlas shows, named like the block.
"""

from __future__ import annotations

import torch
from torch import nn

# (name, in_channels, out_channels, kernel, pool_after)
BLOCKS = (("conv1", 3, 32, 5, True), ("conv2", 32, 64, 3, True), ("conv3", 64, 96, 3, True), ("conv4", 96, 128, 3, False))
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


class Block(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int):
        super().__init__(nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU())


class TinyVision(nn.Module):
    def __init__(self, n_classes: int):
        super().__init__()
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))
        for name, c_in, c_out, kernel, _ in BLOCKS:
            self.add_module(name, Block(c_in, c_out, kernel))
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(BLOCKS[-1][2], n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [batch, 3, H, W] in [0, 1]
        x = (x - self.mean) / self.std
        for name, *_, pool in BLOCKS:
            x = getattr(self, name)(x)  # [batch, c_out, h, w]
            if pool:
                x = self.pool(x)
        return self.head(x)  # [batch, n_classes] logits
