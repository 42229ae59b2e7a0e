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

import platform
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


# CPU features that compute bfloat16 in hardware: Intel's AMX, AVX-512 BF16 (Intel Cooper Lake on, AMD Zen 4 on), Arm's
# BF16 extension. Without one, torch emulates bfloat16 convolutions in float32 and pays for the conversions: on an AMD
# EPYC without them InceptionV1 rendered at 819 ms per unit-step in bfloat16 against 80 in float32.
NATIVE_BFLOAT16_FLAGS = frozenset({"amx_bf16", "avx512_bf16", "bf16"})


def cpuinfo(*keys: str) -> str | None:
    """The value of the first line of Linux's /proc/cpuinfo whose key is one of ``keys``; None where there is none
    (another system, or a CPU that does not list it)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as lines:
            for line in lines:
                key, _, value = line.partition(":")
                if key.strip() in keys:
                    return value.strip()
    except OSError:
        pass
    return None


def native_bfloat16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bfloat16 convolutions in hardware; elsewhere autocast emulates them, slowly."""
    device = torch.device(device)
    if device.type == "cuda":
        try:
            return torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # torch before 2.4 counts no emulation
            return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    flags = cpuinfo("flags", "Features")  # x86's feature flags, Arm's
    if flags is None:  # no feature list to read: oneDNN's own check (AVX-512 or Arm BF16)
        return torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return not NATIVE_BFLOAT16_FLAGS.isdisjoint(flags.split())


def bfloat16_refusal(device: torch.device | str) -> str | None:
    """Why ``--precision bfloat16`` is refused on ``device`` (it would be slower than float32, not faster), or None."""
    if native_bfloat16(device):
        return None
    if torch.device(device).type == "cpu":
        where = f"this CPU ({cpuinfo('model name', 'Model') or platform.machine()}) has neither AMX nor AVX-512 BF16"
    else:
        where = f"{device} has no native bfloat16"
    return (f"--precision bfloat16: {where}, so torch would emulate bfloat16, slower than float32 rather than "
            f"faster (ten times slower on an AMD EPYC without them); use --precision float32 (the default), or run on "
            f"a CPU with AMX or AVX-512 BF16 (Intel Xeon from Cooper Lake, AMD from Zen 4) or a GPU with bfloat16 "
            f"(NVIDIA from Ampere)")


def channels_last(images: torch.Tensor) -> torch.Tensor:
    """[batch, 3, h, w] images laid out channels-last, the layout CPU and GPU convolutions run fastest on."""
    return images.contiguous(memory_format=torch.channels_last)
