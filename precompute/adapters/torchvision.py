"""torchvision's architectures: VGG19 for Microscope's ``vgg19_caffe`` (read from the Caffe model VGG published, as
Microscope's was), and any ``torchvision:NAME`` a user brings."""

from __future__ import annotations

import torchvision
from torch import nn

from precompute.adapters import built
from precompute.registry import ModelSpec

# Caffe layer -> torchvision VGG19 module: conv1_1 ... conv5_4 are features.0, 2, 5, 7, ... in order; fc6/7/8 the
# classifier's linear layers
VGG19_CONVS = ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3", "conv3_4",
               "conv4_1", "conv4_2", "conv4_3", "conv4_4", "conv5_1", "conv5_2", "conv5_3", "conv5_4")


def vgg19_modules() -> dict[str, str]:
    """Caffe layer name -> module path in torchvision's ``vgg19`` (its convs in order; fc6/7/8 the classifier's)."""
    net = torchvision.models.vgg19(weights=None)
    convs = [name for name, module in net.features.named_children() if isinstance(module, nn.Conv2d)]
    return {**{caffe: f"features.{index}" for caffe, index in zip(VGG19_CONVS, convs)},
            "fc6": "classifier.0", "fc7": "classifier.3", "fc8": "classifier.6"}


def vgg19_caffe(spec: ModelSpec) -> nn.Module:
    modules = vgg19_modules()
    return built(spec, lambda: torchvision.models.vgg19(weights=None), modules.__getitem__)


def architecture(name: str) -> nn.Module:
    """``torchvision:NAME``: the architecture, untrained (weights come from the user's --weights)."""
    try:
        return torchvision.models.get_model(name, weights=None)
    except ValueError:
        raise ValueError(f"torchvision has no model {name!r}; it has {', '.join(torchvision.models.list_models()[:12])}"
                         f", ... (torchvision.models.list_models())") from None
