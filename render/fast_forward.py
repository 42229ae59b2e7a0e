"""Run a network's forward (and so its backward) faster without changing what it computes.

Rendering spends nearly all its time in the network cut at the target layer, hundreds of forward and backward passes
per image. On CPU three things decide that time (``bench/render_vs_lucent.py`` measures them on InceptionV1):

- Local response normalisation. ``F.local_response_norm`` sums squares over a window of channels with a 3-d average
  pool, which is slow on CPU in both directions: on InceptionV1 cut at mixed4a its two LRNs took more time than all
  its convolutions. The same sum is a 1x1 convolution with a banded 0/1 channel matrix, which runs on the
  convolution kernels; ``fast_forward()`` swaps it in (equal up to float rounding, about 1e-6 relative).
- Memory layout. Convolutions run about a third faster on channels-last activations; ``channels_last()`` gives the
  input that layout and it propagates through the network.
- Precision. ``precision="bfloat16"`` runs the network under autocast: convolutions and matrix products in bfloat16
  (several times faster on CPUs with AMX or AVX-512 BF16, and on GPUs), everything else, the image parameterisation,
  transforms and objective included, in float32. It changes the numbers (8 bits of mantissa in the network), so it
  is a choice recorded beside every image, never a default.

Not for use inside ``render.linearize.linearized()``: the swapped LRN would escape its linearisation.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def banded_local_response_norm(input: torch.Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75,
                               k: float = 1.0) -> torch.Tensor:
    """``F.local_response_norm`` of a [batch, channels, h, w] input, its channel-window sum as a 1x1 convolution.

    Output channel c sums the squares of channels c - size // 2 ... c + (size - 1) // 2 that exist (torch's window,
    zero-padded at the ends), times alpha / size; then input / (k + that) ** beta.
    """
    channels = input.shape[1]
    index = torch.arange(channels, device=input.device)
    offset = index[None, :] - index[:, None]  # [out, in]: how far input channel lies from output channel
    band = ((offset >= -(size // 2)) & (offset <= (size - 1) // 2)).to(input.dtype) * (alpha / size)
    bias = torch.full((channels,), float(k), dtype=input.dtype, device=input.device)
    denominator = F.conv2d(input * input, band[:, :, None, None], bias)  # [batch, channels, h, w]
    return input * (denominator.rsqrt() if beta == 0.5 else denominator.pow(-beta))  # rsqrt: InceptionV1's beta


class _FastForms(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.local_response_norm and (args[0] if args else kwargs["input"]).dim() == 4:
            return banded_local_response_norm(*args, **kwargs)
        return func(*args, **kwargs)


@contextmanager
def fast_forward(precision: str = "float32", device: torch.device | str = "cpu") -> Iterator[None]:
    """Within the block, networks run the fast forms above, and under bfloat16 autocast on ``device`` if asked."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, not {precision!r}")
    with ExitStack() as stack:
        stack.enter_context(_FastForms())
        if precision != "float32":
            stack.enter_context(torch.autocast(torch.device(device).type, dtype=PRECISIONS[precision]))
        yield


def native_bfloat16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bfloat16 convolutions in hardware; elsewhere autocast emulates them, slowly."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def channels_last(images: torch.Tensor) -> torch.Tensor:
    """[batch, 3, h, w] images laid out channels-last, the layout CPU and GPU convolutions run fastest on."""
    return images.contiguous(memory_format=torch.channels_last)
