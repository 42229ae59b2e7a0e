"""The Caffe-era organisms Microscope showed: BVLC AlexNet (ImageNet and Places365) and BVLC GoogLeNet (Places365).

No torch library ships these exactly (torchvision's AlexNet is the later one-GPU variant with 64/192 channels, its
GoogLeNet has batchnorm), so the two architectures are written out here with Caffe's shapes, groups, LRN and
ceil-mode pooling, and module names taken from the Caffe layer names (``conv2/3x3_reduce`` → ``conv2_3x3_reduce``;
``inception_3a/pool_proj`` → ``inception_3a.pool_proj``). Each layer the atlas shows is a module whose output is the
post-ReLU activation (a ``ConvReLU``) or an inception block's concatenation.

Weights come from the ``.caffemodel`` files their authors published, read by ``precompute.adapters.caffemodel``
without Caffe.

Inputs are BGR, 0-255, minus the ImageNet mean per channel: ``precompute.registry.Preprocess`` maps our [0, 1] RGB
images there before the first layer.
"""

from __future__ import annotations

import torch
from torch import nn

from precompute.adapters import built


class ConvReLU(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, padding: int = 0, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding, groups=groups)
        self.relu = nn.ReLU()


def _lrn() -> nn.LocalResponseNorm:
    return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)  # Caffe's across-channel LRN of both nets


def _pool(kernel: int = 3, stride: int = 2, padding: int = 0) -> nn.MaxPool2d:
    return nn.MaxPool2d(kernel, stride, padding, ceil_mode=True)  # Caffe rounds pooled sizes up


class AlexNet(nn.Module):
    """BVLC AlexNet (Krizhevsky et al. 2012 as reproduced in Caffe): 227 px input, two-group conv2/4/5."""

    def __init__(self, n_classes: int = 1000):
        super().__init__()
        self.conv1 = ConvReLU(3, 96, 11, stride=4)
        self.norm1, self.pool1 = _lrn(), _pool()
        self.conv2 = ConvReLU(96, 256, 5, padding=2, groups=2)
        self.norm2, self.pool2 = _lrn(), _pool()
        self.conv3 = ConvReLU(256, 384, 3, padding=1)
        self.conv4 = ConvReLU(384, 384, 3, padding=1, groups=2)
        self.conv5 = ConvReLU(384, 256, 3, padding=1, groups=2)
        self.pool5 = _pool()
        self.fc6, self.fc7, self.fc8 = nn.Linear(256 * 6 * 6, 4096), nn.Linear(4096, 4096), nn.Linear(4096, n_classes)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [batch, 3, 227, 227], BGR minus the mean
        x = self.pool1(self.norm1(self.conv1(x)))  # [batch, 96, 27, 27]
        x = self.pool2(self.norm2(self.conv2(x)))  # [batch, 256, 13, 13]
        x = self.pool5(self.conv5(self.conv4(self.conv3(x))))  # [batch, 256, 6, 6]
        x = self.drop(torch.relu(self.fc6(x.flatten(1))))
        return self.fc8(self.drop(torch.relu(self.fc7(x))))  # [batch, n_classes] logits


class Inception(nn.Module):
    """A GoogLeNet inception block: 1x1, 1x1→3x3, 1x1→5x5 and 3x3 max pool→1x1 branches, concatenated."""

    def __init__(self, c_in: int, b1x1: int, reduce3: int, b3x3: int, reduce5: int, b5x5: int, pool_proj: int):
        super().__init__()
        self.b1x1 = ConvReLU(c_in, b1x1, 1)
        self.b3x3_reduce, self.b3x3 = ConvReLU(c_in, reduce3, 1), ConvReLU(reduce3, b3x3, 3, padding=1)
        self.b5x5_reduce, self.b5x5 = ConvReLU(c_in, reduce5, 1), ConvReLU(reduce5, b5x5, 5, padding=2)
        self.pool = _pool(3, 1, 1)
        self.pool_proj = ConvReLU(c_in, pool_proj, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [batch, c_in, h, w] -> [batch, c_out, h, w]
        return torch.cat([self.b1x1(x), self.b3x3(self.b3x3_reduce(x)), self.b5x5(self.b5x5_reduce(x)),
                          self.pool_proj(self.pool(x))], dim=1)


# name -> (c_in, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj), as in BVLC's deploy.prototxt
INCEPTIONS = {
    "inception_3a": (192, 64, 96, 128, 16, 32, 32), "inception_3b": (256, 128, 128, 192, 32, 96, 64),
    "inception_4a": (480, 192, 96, 208, 16, 48, 64), "inception_4b": (512, 160, 112, 224, 24, 64, 64),
    "inception_4c": (512, 128, 128, 256, 24, 64, 64), "inception_4d": (512, 112, 144, 288, 32, 64, 64),
    "inception_4e": (528, 256, 160, 320, 32, 128, 128), "inception_5a": (832, 256, 160, 320, 32, 128, 128),
    "inception_5b": (832, 384, 192, 384, 48, 128, 128),
}
POOL_AFTER = {"inception_3b", "inception_4e"}  # 3x3 stride-2 max pools between the stages


class GoogLeNet(nn.Module):
    """BVLC GoogLeNet (Szegedy et al. 2014 as reproduced in Caffe), deploy form: no auxiliary classifiers."""

    def __init__(self, n_classes: int = 1000):
        super().__init__()
        self.conv1_7x7_s2 = ConvReLU(3, 64, 7, stride=2, padding=3)
        self.pool1, self.norm1 = _pool(), _lrn()
        self.conv2_3x3_reduce = ConvReLU(64, 64, 1)
        self.conv2_3x3 = ConvReLU(64, 192, 3, padding=1)
        self.norm2, self.pool2 = _lrn(), _pool()
        for name, shape in INCEPTIONS.items():
            self.add_module(name, Inception(*shape))
        self.stage_pool = _pool()
        self.classifier = nn.Linear(1024, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [batch, 3, 224, 224], BGR minus the mean
        x = self.norm1(self.pool1(self.conv1_7x7_s2(x)))  # [batch, 64, 56, 56]
        x = self.pool2(self.norm2(self.conv2_3x3(self.conv2_3x3_reduce(x))))  # [batch, 192, 28, 28]
        for name in INCEPTIONS:
            x = getattr(self, name)(x)
            if name in POOL_AFTER:
                x = self.stage_pool(x)  # after 3b: [batch, 480, 14, 14]; after 4e: [batch, 832, 7, 7]
        return self.classifier(x.mean(dim=(2, 3)))  # [batch, n_classes] logits


def module_for(caffe_layer: str) -> str | None:
    """The module holding a Caffe layer's parameters: ``conv2/3x3_reduce`` → ``conv2_3x3_reduce.conv``,
    ``inception_4a/5x5_reduce`` → ``inception_4a.b5x5_reduce.conv``, ``loss3/classifier`` → ``classifier``,
    ``fc6`` → ``fc6``; None for GoogLeNet's auxiliary classifiers (``loss1/*``, ``loss2/*``), which a trained
    caffemodel keeps and the deploy net drops."""
    if caffe_layer.startswith(("loss1/", "loss2/")):
        return None
    if caffe_layer == "loss3/classifier":
        return "classifier"
    if caffe_layer.startswith("fc"):
        return caffe_layer
    block, _, branch = caffe_layer.partition("/")
    if block.startswith("inception_"):
        return f"{block}.{branch if branch == 'pool_proj' else 'b' + branch}.conv"
    return f"{caffe_layer.replace('/', '_')}.conv"


def load_alexnet(spec) -> AlexNet:
    return built(spec, AlexNet, module_for)


def load_alexnet_places365(spec) -> AlexNet:
    return built(spec, lambda: AlexNet(365), module_for)


def load_googlenet_places365(spec) -> GoogLeNet:
    return built(spec, lambda: GoogLeNet(365), module_for)
