"""Read a Caffe ``.caffemodel`` (a protobuf ``NetParameter``) without Caffe or protobuf: only the parts that hold
weights, decoded from the wire format.

What is read (caffe.proto's field numbers): ``NetParameter.layer`` (100, ``LayerParameter``: name 1, blobs 7) and the
older ``NetParameter.layers`` (2, ``V1LayerParameter``: name 4, blobs 6), in which BVLC's 2014 models are stored;
``BlobProto``: data 5 (float32, packed or not), shape 7 (``BlobShape.dim`` 1) or the legacy num/channels/height/
width 1-4. Everything else is skipped by its wire type.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import torch
from torch import nn

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5


class CaffeModelError(ValueError):
    pass


def _varint(buf: memoryview, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(buf):
            raise CaffeModelError("truncated varint")
        byte = buf[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def _fields(buf: memoryview):
    """Yield (field number, wire type, value) of one message: an int for varints, a memoryview for the others."""
    at = 0
    while at < len(buf):
        key, at = _varint(buf, at)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            value, at = _varint(buf, at)
        elif wire == LENGTH:
            size, at = _varint(buf, at)
            value, at = buf[at:at + size], at + size
            if len(value) != size:
                raise CaffeModelError("truncated field")
        elif wire in (FIXED64, FIXED32):
            size = 8 if wire == FIXED64 else 4
            value, at = buf[at:at + size], at + size
        else:
            raise CaffeModelError(f"unsupported wire type {wire} (not a caffemodel?)")
        yield number, wire, value


def _blob(buf: memoryview) -> np.ndarray:
    data, legacy, dims = [], {}, []
    for number, wire, value in _fields(buf):
        if number == 5:  # data: packed (one length-delimited run) or one fixed32 per value
            data.append(np.frombuffer(value, "<f4") if wire == LENGTH else np.array(struct.unpack("<f", value), "<f4"))
        elif number in (1, 2, 3, 4) and wire == VARINT:
            legacy[number] = value
        elif number == 7:
            for dim_number, dim_wire, dim in _fields(value):
                if dim_number == 1 and dim_wire == VARINT:
                    dims.append(dim)
                elif dim_number == 1:  # packed int64s
                    at = 0
                    while at < len(dim):
                        one, at = _varint(dim, at)
                        dims.append(one)
    values = np.concatenate(data) if data else np.zeros(0, "<f4")
    shape = dims or [legacy.get(n, 1) for n in (1, 2, 3, 4)]
    if int(np.prod(shape)) != values.size:
        raise CaffeModelError(f"blob of shape {shape} holds {values.size} values")
    return values.reshape(shape)


def read_caffemodel(path: Path) -> dict[str, list[np.ndarray]]:
    """Caffe layer name -> its blobs (weights, then bias), for every layer that has any."""
    buf = memoryview(path.read_bytes())
    layers: dict[str, list[np.ndarray]] = {}
    for number, wire, value in _fields(buf):
        if wire != LENGTH or number not in (100, 2):
            continue
        name_field, blob_field = (1, 7) if number == 100 else (4, 6)
        name, blobs = None, []
        for field, field_wire, content in _fields(value):
            if field == name_field and field_wire == LENGTH:
                name = bytes(content).decode()
            elif field == blob_field and field_wire == LENGTH:
                blobs.append(_blob(content))
        if name and blobs:
            layers[name] = blobs
    if not layers:
        raise CaffeModelError(f"{path} holds no layers with weights (not a caffemodel?)")
    return layers


def load_caffemodel(model: nn.Module, path: Path, module_for) -> None:
    """Copy every weighted layer of the caffemodel at ``path`` into ``model``: ``module_for(caffe name)`` names the
    module (a conv or linear) that takes blob 0 as its weight and blob 1 as its bias, or None for a layer to skip. Every parameter of the model
    must be covered and every weighted Caffe layer used, with matching sizes; otherwise the error names the first few
    that are not."""
    layers = read_caffemodel(path)
    state: dict[str, torch.Tensor] = {}
    unknown = []
    for name, blobs in layers.items():
        target = module_for(name)
        if target is None:  # a layer the architecture leaves out on purpose
            continue
        try:
            module = model.get_submodule(target)
        except AttributeError:
            unknown.append(name)
            continue
        for blob, param in zip(blobs, ("weight", "bias")):
            expected = getattr(module, param).shape
            if blob.size != expected.numel():
                raise CaffeModelError(f"{path}: Caffe layer {name!r} blob {param} has {blob.size} values, "
                                      f"{target}.{param} needs {tuple(expected)}")
            state[f"{target}.{param}"] = torch.from_numpy(blob.reshape(tuple(expected)).copy())
    missing = [key for key, _ in model.named_parameters() if key not in state]
    if unknown or missing:
        raise CaffeModelError(f"{path} does not fit this architecture: Caffe layers with no module here: "
                              f"{unknown[:5] or 'none'}; parameters it does not set: {missing[:5] or 'none'}")
    model.load_state_dict(state, strict=False)
