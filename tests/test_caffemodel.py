"""The Caffe model reader: a caffemodel written here in Caffe's protobuf wire format, in both of its layouts (the
2014 ``layers`` and the later ``layer``), loads exactly into the organisms' architectures; broken files are refused
with a message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from precompute.adapters import read_weights
from precompute.adapters.caffe import AlexNet, GoogLeNet, module_for
from precompute.adapters.caffemodel import read_caffemodel
from precompute.registry import WeightsError


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _blob(values: np.ndarray, legacy: bool) -> bytes:
    data = _field(5, values.astype("<f4").tobytes())  # packed floats
    if legacy:  # num, channels, height, width as varints
        dims = list(values.shape) if values.ndim == 4 else [1, 1, *([1] * (2 - values.ndim)), *values.shape]
        return b"".join(_varint(n << 3) + _varint(d) for n, d in zip((1, 2, 3, 4), dims)) + data
    return _field(7, _field(1, b"".join(_varint(d) for d in values.shape))) + data


def write_caffemodel(path: Path, layers: dict[str, list[np.ndarray]], legacy: bool) -> Path:
    """NetParameter with a weighted layer per entry (plus one without blobs, as a ReLU is stored)."""
    layer_field, name_field, blob_field = (2, 4, 6) if legacy else (100, 1, 7)
    parts = [_field(1, b"net")]
    for name, blobs in {"relu1": [], **layers}.items():
        body = _field(name_field, name.encode()) + b"".join(_field(blob_field, _blob(b, legacy)) for b in blobs)
        if not legacy:
            body += _field(2, b"Convolution")
        parts.append(_field(layer_field, body))
    path.write_bytes(b"".join(parts))
    return path


def caffe_layers(net: torch.nn.Module, names: list[str]) -> dict[str, list[np.ndarray]]:
    return {name: [net.get_submodule(module_for(name)).weight.detach().numpy(),
                   net.get_submodule(module_for(name)).bias.detach().numpy()] for name in names}


ALEXNET = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]


@pytest.mark.parametrize("legacy", [True, False])
def test_a_caffemodel_loads_exactly_into_alexnet(tmp_path, legacy):
    torch.manual_seed(1)
    source = AlexNet()
    path = write_caffemodel(tmp_path / "bvlc_alexnet.caffemodel", caffe_layers(source, ALEXNET), legacy)
    assert set(read_caffemodel(path)) == set(ALEXNET)  # the ReLU without blobs is skipped
    torch.manual_seed(2)
    target = AlexNet()
    read_weights(target, path, "caffemodel", module_for)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_googlenets_auxiliary_classifiers_are_skipped(tmp_path):
    torch.manual_seed(3)
    source = GoogLeNet(365)
    names = ["conv1/7x7_s2", "conv2/3x3_reduce", "conv2/3x3", "loss3/classifier"] + [
        f"{block}/{branch}" for block in ("inception_3a", "inception_3b", "inception_4a", "inception_4b",
                                          "inception_4c", "inception_4d", "inception_4e", "inception_5a",
                                          "inception_5b")
        for branch in ("1x1", "3x3_reduce", "3x3", "5x5_reduce", "5x5", "pool_proj")]
    layers = {**caffe_layers(source, names), "loss1/fc": [np.zeros((2, 3), np.float32)]}
    path = write_caffemodel(tmp_path / "googlenet_places365.caffemodel", layers, legacy=False)
    target = GoogLeNet(365)
    read_weights(target, path, "caffemodel", module_for)
    assert all(torch.equal(target.state_dict()[k], v) for k, v in source.state_dict().items())


def test_a_caffemodel_missing_layers_or_truncated_is_refused(tmp_path):
    source = AlexNet()
    partial = write_caffemodel(tmp_path / "partial.caffemodel", caffe_layers(source, ALEXNET[:-1]), legacy=False)
    with pytest.raises(WeightsError, match=r"parameters it does not set: \['fc8.weight', 'fc8.bias'\]"):
        read_weights(AlexNet(), partial, "caffemodel", module_for)
    cut = tmp_path / "cut.caffemodel"
    cut.write_bytes(partial.read_bytes()[:1000])
    with pytest.raises(WeightsError, match="truncated"):
        read_weights(AlexNet(), cut, "caffemodel", module_for)
    wrong = tmp_path / "wrong.caffemodel"
    wrong.write_bytes(_field(100, _field(1, b"conv1") + _field(7, _blob(np.zeros(5, np.float32), False))))
    with pytest.raises(WeightsError, match="'conv1' blob weight has 5 values"):
        read_weights(AlexNet(), wrong, "caffemodel", module_for)
