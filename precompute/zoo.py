"""Microscope's eight vision organisms as registry entries (torch-free): each names the library module that builds
its architecture (``precompute.adapters``), the layers Microscope showed with their unit counts and activation
shapes, its input preprocessing, and where its published weights come from. Slugs are Microscope's own
(``store.microscope`` maps its op names to these layers).

None has a built-in dataset (ImageNet and Places365 cannot be fetched here): their units are ranked on the images of
``--dataset DIR``, and the same images give their activation statistics.
"""

from __future__ import annotations

from precompute.spec import LayerSpec, ModelSpec, Preprocess, WeightSource

IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)  # Caffe's ImageNet mean, as lucid's Caffe ports subtract it
CAFFE = dict(value_range=(0.0, 255.0), mean=IMAGENET_MEAN_BGR, bgr=True)  # BGR, 0-255, mean subtracted
SLIM = dict(value_range=(-1.0, 1.0))  # TF-slim's inception preprocessing

# (layer name, module path, units, activation side, direct: its conv reads the previous layer as it is)
_ALEXNET = (
    ("conv1", "conv1", 96, 55),
    ("conv2", "conv2", 256, 27),
    ("conv3", "conv3", 384, 13),
    ("conv4", "conv4", 384, 13, True),
    ("conv5", "conv5", 256, 13, True),
)
_INCEPTIONV1 = (
    ("conv2d0", "conv2d0", 64, 112),
    ("conv2d1", "conv2d1", 64, 56),
    ("conv2d2", "conv2d2", 192, 56, True),
    ("mixed3a", "mixed3a", 256, 28),
    ("mixed3b", "mixed3b", 480, 28),
    ("mixed4a", "mixed4a", 508, 14),
    ("mixed4b", "mixed4b", 512, 14),
    ("mixed4c", "mixed4c", 512, 14),
    ("mixed4d", "mixed4d", 528, 14),
    ("mixed4e", "mixed4e", 832, 14),
    ("mixed5a", "mixed5a", 832, 7),
    ("mixed5b", "mixed5b", 1024, 7),
)
_GOOGLENET = (
    ("conv1_7x7_s2", "conv1_7x7_s2", 64, 112),
    ("conv2_3x3_reduce", "conv2_3x3_reduce", 64, 56),
    ("conv2_3x3", "conv2_3x3", 192, 56, True),
    ("inception_3a", "inception_3a", 256, 28),
    ("inception_3b", "inception_3b", 480, 28),
    ("inception_4a", "inception_4a", 512, 14),
    ("inception_4b", "inception_4b", 512, 14),
    ("inception_4c", "inception_4c", 512, 14),
    ("inception_4d", "inception_4d", 528, 14),
    ("inception_4e", "inception_4e", 832, 14),
    ("inception_5a", "inception_5a", 832, 7),
    ("inception_5b", "inception_5b", 1024, 7),
)
_VGG19 = (
    ("conv1_1", "features.1", 64, 224),
    ("conv1_2", "features.3", 64, 224, True),
    ("conv2_1", "features.6", 128, 112),
    ("conv2_2", "features.8", 128, 112, True),
    ("conv3_1", "features.11", 256, 56),
    ("conv3_2", "features.13", 256, 56, True),
    ("conv3_3", "features.15", 256, 56, True),
    ("conv3_4", "features.17", 256, 56, True),
    ("conv4_1", "features.20", 512, 28),
    ("conv4_2", "features.22", 512, 28, True),
    ("conv4_3", "features.24", 512, 28, True),
    ("conv4_4", "features.26", 512, 28, True),
    ("conv5_1", "features.29", 512, 14),
    ("conv5_2", "features.31", 512, 14, True),
    ("conv5_3", "features.33", 512, 14, True),
    ("conv5_4", "features.35", 512, 14, True),
)
_INCEPTIONV3 = (
    ("Conv2d_1a_3x3", "Conv2d_1a_3x3", 32, 149),
    ("Conv2d_2a_3x3", "Conv2d_2a_3x3", 32, 147, True),
    ("Conv2d_2b_3x3", "Conv2d_2b_3x3", 64, 147, True),
    ("Conv2d_3b_1x1", "Conv2d_3b_1x1", 80, 73),
    ("Conv2d_4a_3x3", "Conv2d_4a_3x3", 192, 71, True),
    ("Mixed_5b", "Mixed_5b", 256, 35),
    ("Mixed_5c", "Mixed_5c", 288, 35),
    ("Mixed_5d", "Mixed_5d", 288, 35),
    ("Mixed_6a", "Mixed_6a", 768, 17),
    ("Mixed_6b", "Mixed_6b", 768, 17),
    ("Mixed_6c", "Mixed_6c", 768, 17),
    ("Mixed_6d", "Mixed_6d", 768, 17),
    ("Mixed_6e", "Mixed_6e", 768, 17),
    ("Mixed_7a", "Mixed_7a", 1280, 8),
    ("Mixed_7b", "Mixed_7b", 2048, 8),
    ("Mixed_7c", "Mixed_7c", 2048, 8),
)
_INCEPTIONV4 = (
    ("Conv2d_1a_3x3", "features.0", 32, 149),
    ("Conv2d_2a_3x3", "features.1", 32, 147, True),
    ("Conv2d_2b_3x3", "features.2", 64, 147, True),
    ("Mixed_3a", "features.3", 160, 73),
    ("Mixed_4a", "features.4", 192, 71),
    ("Mixed_5a", "features.5", 384, 35),
    ("Mixed_5b", "features.6", 384, 35),
    ("Mixed_5c", "features.7", 384, 35),
    ("Mixed_5d", "features.8", 384, 35),
    ("Mixed_5e", "features.9", 384, 35),
    ("Mixed_6a", "features.10", 1024, 17),
    ("Mixed_6b", "features.11", 1024, 17),
    ("Mixed_6c", "features.12", 1024, 17),
    ("Mixed_6d", "features.13", 1024, 17),
    ("Mixed_6e", "features.14", 1024, 17),
    ("Mixed_6f", "features.15", 1024, 17),
    ("Mixed_6g", "features.16", 1024, 17),
    ("Mixed_6h", "features.17", 1024, 17),
    ("Mixed_7a", "features.18", 1536, 8),
    ("Mixed_7b", "features.19", 1536, 8),
    ("Mixed_7c", "features.20", 1536, 8),
    ("Mixed_7d", "features.21", 1536, 8),
)
_RESNETV2_50 = (
    ("block1_unit_1_preact", "stages.0.blocks.0.norm1", 64, 56),
    ("block1_unit_1", "stages.0.blocks.0", 256, 56),
    ("block1_unit_2", "stages.0.blocks.1", 256, 56),
    ("block1_unit_3", "stages.0.blocks.2", 256, 56),
    ("block2_unit_1_preact", "stages.1.blocks.0.norm1", 256, 56),
    ("block2_unit_1", "stages.1.blocks.0", 512, 28),
    ("block2_unit_2", "stages.1.blocks.1", 512, 28),
    ("block2_unit_3", "stages.1.blocks.2", 512, 28),
    ("block2_unit_4", "stages.1.blocks.3", 512, 28),
    ("block3_unit_1_preact", "stages.2.blocks.0.norm1", 512, 28),
    ("block3_unit_1", "stages.2.blocks.0", 1024, 14),
    ("block3_unit_2", "stages.2.blocks.1", 1024, 14),
    ("block3_unit_3", "stages.2.blocks.2", 1024, 14),
    ("block3_unit_4", "stages.2.blocks.3", 1024, 14),
    ("block3_unit_5", "stages.2.blocks.4", 1024, 14),
    ("block3_unit_6", "stages.2.blocks.5", 1024, 14),
    ("block4_unit_1_preact", "stages.3.blocks.0.norm1", 1024, 14),
    ("block4_unit_1", "stages.3.blocks.0", 2048, 7),
    ("block4_unit_2", "stages.3.blocks.1", 2048, 7),
    ("block4_unit_3", "stages.3.blocks.2", 2048, 7),
    ("postnorm", "norm", 2048, 7),
)


def _layers(table: tuple) -> tuple[LayerSpec, ...]:
    return tuple(LayerSpec(name, module, "conv", units, (units, side, side), *rest)
                 for name, module, units, side, *rest in table)


def _organism(slug: str, title: str, description: str, loader: str, table: tuple, preprocess: Preprocess,
              weights: WeightSource, architecture: str) -> ModelSpec:
    return ModelSpec(slug=slug, title=title, kind="vision", description=description,
                     source=f"{architecture}; weights: {weights.file} from {weights.url}", layers=_layers(table),
                     loader=loader, preprocess=preprocess, weights_source=weights, microscope=slug)


CAFFE_WEIGHTS_NOTE = "the Caffe model Microscope's TensorFlow graph was converted from (lucid's caffe-tensorflow port)"

ORGANISMS = (
    _organism(
        "alexnet", "AlexNet", "Krizhevsky, Sutskever and Hinton's 2012 ImageNet network as BVLC reproduced it in "
        "Caffe: five conv layers, three of them split in two groups (the two GPUs of the original), LRN, 227 px.",
        "precompute.adapters.caffe:load_alexnet", _ALEXNET, Preprocess(227, 256, **CAFFE),
        WeightSource("bvlc_alexnet.caffemodel", "http://dl.caffe.berkeleyvision.org/bvlc_alexnet.caffemodel",
                     "caffemodel", note="BVLC's reference AlexNet; lucid's AlexNet graph holds a port of these "
                                        "weights"),
        "architecture: precompute.adapters.caffe.AlexNet (BVLC's deploy.prototxt)"),
    _organism(
        "alexnet_caffe_places365", "AlexNet (Places365)", "The same AlexNet trained by MIT CSAIL on Places365: "
        "365 scene categories instead of ImageNet's objects.",
        "precompute.adapters.caffe:load_alexnet_places365", _ALEXNET, Preprocess(227, 256, **CAFFE),
        WeightSource("alexnet_places365.caffemodel",
                     "http://places2.csail.mit.edu/models_places365/alexnet_places365.caffemodel", "caffemodel",
                     note=CAFFE_WEIGHTS_NOTE),
        "architecture: precompute.adapters.caffe.AlexNet with 365 classes"),
    _organism(
        "inceptionv1", "InceptionV1 (GoogLeNet)", "Google's 2014 ImageNet winner in the TensorFlow version lucid "
        "and the Circuits thread study (inception5h): the model of Microscope's most cited pages, curve detectors "
        "in mixed3b, dog heads in mixed4c.",
        "precompute.adapters.lucent:inceptionv1", _INCEPTIONV1, Preprocess(224, 256, value_range=(-117.0, 138.0)),
        WeightSource("inception5h.pth",
                     "https://github.com/ProGamerGov/pytorch-old-tensorflow-models/raw/master/inception5h.pth",
                     "state_dict", note="torch-lucent's port of lucid's InceptionV1 graph, the weights Microscope "
                                        "rendered"),
        "architecture: torch-lucent's modelzoo InceptionV1"),
    _organism(
        "inceptionv1_caffe_places365", "InceptionV1 (Places365)", "GoogLeNet as BVLC reproduced it in Caffe, trained "
        "by MIT CSAIL on Places365's 365 scene categories.",
        "precompute.adapters.caffe:load_googlenet_places365", _GOOGLENET, Preprocess(224, 256, **CAFFE),
        WeightSource("googlenet_places365.caffemodel",
                     "http://places2.csail.mit.edu/models_places365/googlenet_places365.caffemodel", "caffemodel",
                     note=CAFFE_WEIGHTS_NOTE),
        "architecture: precompute.adapters.caffe.GoogLeNet (BVLC's deploy.prototxt) with 365 classes"),
    _organism(
        "vgg19_caffe", "VGG19", "Simonyan and Zisserman's 19-layer network (ILSVRC 2014): sixteen 3x3 conv layers "
        "in five blocks, the Oxford group's own Caffe weights.",
        "precompute.adapters.torchvision:vgg19_caffe", _VGG19, Preprocess(224, 256, **CAFFE),
        WeightSource("VGG_ILSVRC_19_layers.caffemodel",
                     "http://www.robots.ox.ac.uk/~vgg/software/very_deep/caffe/VGG_ILSVRC_19_layers.caffemodel",
                     "caffemodel", note=CAFFE_WEIGHTS_NOTE),
        "architecture: torchvision.models.vgg19"),
    _organism(
        "inceptionv3_slim", "InceptionV3", "Szegedy et al.'s 2015 Inception with factorised 7x7 and asymmetric "
        "convolutions, 299 px, as trained in TensorFlow-slim.",
        "precompute.adapters.timm:inceptionv3_slim", _INCEPTIONV3, Preprocess(299, 342, **SLIM),
        WeightSource("inception_v3.tf_in1k.safetensors",
                     "https://huggingface.co/timm/inception_v3.tf_in1k/resolve/main/model.safetensors", "safetensors",
                     hf_repo="timm/inception_v3.tf_in1k",
                     note="timm's port of TF-slim's inception_v3 checkpoint, the one Microscope rendered"),
        "architecture: timm inception_v3 (TF-slim's module names)"),
    _organism(
        "inceptionv4_slim", "InceptionV4", "Szegedy et al.'s 2016 Inception-v4: a uniform stem and 4/7/3 inception "
        "blocks of three kinds, 299 px, as trained in TensorFlow-slim.",
        "precompute.adapters.timm:inceptionv4_slim", _INCEPTIONV4, Preprocess(299, 342, **SLIM),
        WeightSource("inception_v4.tf_in1k.safetensors",
                     "https://huggingface.co/timm/inception_v4.tf_in1k/resolve/main/model.safetensors", "safetensors",
                     hf_repo="timm/inception_v4.tf_in1k",
                     note="timm's port of TF-slim's inception_v4 checkpoint, the one Microscope rendered"),
        "architecture: timm inception_v4"),
    _organism(
        "resnetv2_50_slim", "ResNetV2-50", "He et al.'s 2016 pre-activation ResNet with 50 layers: each unit's "
        "input goes through batchnorm and ReLU first (the preact layers), and the units add to the residual stream.",
        "precompute.adapters.timm:resnetv2_50_slim", _RESNETV2_50, Preprocess(224, 256, **SLIM),
        WeightSource("resnetv2_50.a1h_in1k.safetensors",
                     "https://huggingface.co/timm/resnetv2_50.a1h_in1k/resolve/main/model.safetensors", "safetensors",
                     hf_repo="timm/resnetv2_50.a1h_in1k",
                     note="TF-slim's resnet_v2_50 checkpoint, which Microscope rendered, exists only for TensorFlow; "
                          "these are timm's ImageNet weights for the same pre-activation architecture, which "
                          "downsamples in a block's first unit where slim does in its last, so some unit grids "
                          "differ from Microscope's"),
        "architecture: timm resnetv2_50"),
)
