"""Committed weights of the embedded language models, small enough for git.

Matrices that training kept sparse are stored as flat indices of their nonzero entries plus the values; everything in
half precision. A 2-layer, 256-wide model at 1/16 density is then about 1 MB instead of 12 MB of float32. Loading gives
back a float32 state dict; the model card's numbers are measured on these loaded weights, not the float32 originals.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

FORMAT = "atlascope-sparse-gpt/1"
SPARSE_BELOW = 0.5  # store a matrix sparsely when fewer than this fraction of its entries are nonzero


def save(path: Path, config: dict, state: dict[str, torch.Tensor]) -> str:
    """Write the state dict compactly; returns the file's sha256."""
    dense, sparse = {}, {}
    for name, tensor in state.items():
        tensor = tensor.detach().cpu()
        if tensor.dim() == 2 and tensor.count_nonzero() < SPARSE_BELOW * tensor.numel():
            flat = tensor.flatten()
            index = flat.nonzero().squeeze(1)  # [nonzero]
            sparse[name] = {"shape": list(tensor.shape), "index": index.to(torch.int32),
                            "values": flat[index].to(torch.float16)}
        else:
            dense[name] = tensor.to(torch.float16)
    torch.save({"format": FORMAT, "config": config, "dense": dense, "sparse": sparse}, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """The config dict and a float32 state dict."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved.get("format") != FORMAT:
        raise ValueError(f"{path} is not an atlascope compact checkpoint ({FORMAT})")
    state = {name: tensor.float() for name, tensor in saved["dense"].items()}
    for name, entry in saved["sparse"].items():
        matrix = torch.zeros(entry["shape"]).flatten()
        matrix[entry["index"].long()] = entry["values"].float()
        state[name] = matrix.view(entry["shape"])
    return saved["config"], state
