"""OpenAI Microscope's names for its eight vision organisms, mapped to atlascope's, so the links papers cite
(``/models/inceptionv1/mixed4c_0/447``) resolve again. Shared by the registry (which gives the organisms these slugs
and layers) and the server (which answers Microscope's URLs with a redirect); no torch, no database.

Microscope's URLs name a layer by its TensorFlow op, with ``/`` and ``:`` written as ``_``
(``InceptionV3/InceptionV3/Mixed_5b/concat:0`` → ``InceptionV3_InceptionV3_Mixed_5b_concat_0``). The ops here are
those lucid's model zoo lists for each model (Microscope rendered with lucid); an op that is the pre-activation of
one of our layers maps to that layer. Our model slugs are Microscope's.
"""

from __future__ import annotations

import re

# Microscope model slug -> [(TensorFlow op without ":0", our layer)]
_OPS: dict[str, list[tuple[str, str]]] = {
    "alexnet": [("concat_2", "conv5"), ("conv5_1", "conv5")],
    "alexnet_caffe_places365": [("conv5/concat", "conv5"), ("conv5/conv5", "conv5")],
    "inceptionv1": [
        *[(layer, layer) for layer in ("conv2d0", "conv2d1", "conv2d2", "mixed3a", "mixed3b", "mixed4a", "mixed4b",
                                       "mixed4c", "mixed4d", "mixed4e", "mixed5a", "mixed5b")],
        *[(f"{layer}_pre_relu", layer) for layer in ("conv2d0", "conv2d1", "conv2d2")],
    ],
    "inceptionv1_caffe_places365": [
        ("conv1_7x7_s2/conv1_7x7_s2", "conv1_7x7_s2"), ("conv2_3x3_reduce/conv2_3x3_reduce", "conv2_3x3_reduce"),
        ("conv2_3x3/conv2_3x3", "conv2_3x3"),
        *[(f"inception_{block}_output", f"inception_{block}")
          for block in ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")],
    ],
    "vgg19_caffe": [(f"conv{block}_{index}/conv{block}_{index}", f"conv{block}_{index}")
                    for block, count in ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4)) for index in range(1, count + 1)],
    "inceptionv3_slim": [
        *[(f"InceptionV3/InceptionV3/{conv}/Relu", conv)
          for conv in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3")],
        *[(f"InceptionV3/InceptionV3/Mixed_{block}/concat", f"Mixed_{block}")
          for block in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c")],
    ],
    "inceptionv4_slim": [
        *[(f"InceptionV4/InceptionV4/{conv}/Relu", conv)
          for conv in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3")],
        *[(f"InceptionV4/InceptionV4/Mixed_{block}/concat", f"Mixed_{block}")
          for block in ("3a", "4a", "5a", "5b", "5c", "5d", "5e", "6a", "6b", "6c", "6d", "6e", "6f", "6g", "6h",
                        "7a", "7b", "7c", "7d")],
    ],
    "resnetv2_50_slim": [
        *[(f"resnet_v2_50/block{block}/unit_{unit}/bottleneck_v2/{op}", f"block{block}_unit_{unit}{suffix}")
          for block, units in ((1, 3), (2, 4), (3, 6), (4, 3)) for unit in range(1, units + 1)
          for op, suffix in (("add", ""), ("preact/Relu", "_preact")) if op == "add" or unit == 1],
        ("resnet_v2_50/postnorm/Relu", "postnorm"),
    ],
}


def op_slug(op: str) -> str:
    """A TensorFlow op's output as Microscope wrote it in URLs: ``mixed4c`` → ``mixed4c_0``."""
    return re.sub(r"[/:]", "_", f"{op}:0")


# Microscope model slug -> {op as in Microscope's URLs -> our layer}
MICROSCOPE_LAYERS: dict[str, dict[str, str]] = {
    model: {op_slug(op): layer for op, layer in ops} for model, ops in _OPS.items()}

# Microscope's technique query parameters -> the section of our page that shows the same thing. Unit-level techniques
# go to the unit page's section; model-level ones (DeepDream, caricature) to the layer page, which shows them.
UNIT_TECHNIQUES = {"feature_vis": "feature-visualisation", "dataset_examples": "examples", "weights": "weights"}
LAYER_TECHNIQUES = {"deep_dream": "layer-views", "caricature": "layer-views"}


def microscope_layer(model: str, op: str) -> str | None:
    """Our layer for Microscope's op slug in one of its models (None: not a Microscope name we know)."""
    return MICROSCOPE_LAYERS.get(model, {}).get(op)


def technique(query: dict[str, str]) -> tuple[str, str] | None:
    """("unit" | "layer", section id) for Microscope's technique parameters (``models.op.technique=feature_vis``,
    ``models.technique=deep_dream``), or None when the query names none we show. A unit's own technique
    (``models.op.technique``) wins over the model's (``models.technique``), which Microscope's unit URLs may carry
    too; ``models.op.feature_vis.type=neuron`` alone means feature visualisation."""
    named = sorted((key for key in query if key.endswith("technique")), key=lambda key: -key.count("."))
    for value in (query[key] for key in named):  # the most specific key first, then in the query's order
        if value in UNIT_TECHNIQUES:
            return "unit", UNIT_TECHNIQUES[value]
        if value in LAYER_TECHNIQUES:
            return "layer", LAYER_TECHNIQUES[value]
    if any(key.endswith("feature_vis.type") for key in query):
        return "unit", UNIT_TECHNIQUES["feature_vis"]
    return None
