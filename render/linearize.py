"""Run a network with its nonlinearities swapped for their linear counterparts, so it is affine in its input.

The Circuits thread reads "expanded weights" between two layers that are not directly connected as the gradient of a
later unit with respect to an earlier layer with ReLUs replaced by identity and max pooling by average pooling. With
every nonlinearity linearised that gradient is a property of the weights alone, the same at every input, and the
gradient's support is the structural receptive field (a ReLU that happens to be off cannot hide part of it).

What is replaced, inside ``linearized()``:

- relu, relu6, hardtanh, leaky_relu, gelu, silu, elu (functional, in-place and ``torch``/``Tensor`` forms): identity.
  The ``nn`` modules call the functional forms, so they are covered too.
- max_pool1d / max_pool2d: avg_pool with the same kernel, stride, padding and ceil_mode, averaging real cells only
  (``count_include_pad=False``: max pooling never picks a padded cell). Where indices are asked for they come from the
  real max pooling (they are integers, no gradient flows through them).
- adaptive_max_pool2d: adaptive_avg_pool2d.
- local_response_norm: its linearisation at 0, ``x / k**beta``.
- dropout (every variant): identity.

A ``TorchFunctionMode`` catches these where they are called, so ``F.relu(x, inplace=True)`` inside a ``forward()``
(torchvision's Inception) is linearised as well as an ``nn.ReLU``. The mode is thread-local; nothing on the model
changes. Anything else (sigmoid gates, softmax, products of activations) is left as it is and keeps the network
nonlinear. Forward values may stop meaning anything (a max pool behind -inf padding, as TensorFlow ports pad, averages
to -inf), but the backward of a linear op never reads them, so gradients stay exact.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode


def _identity(*args, **kwargs):
    """The input, whatever else the nonlinearity was given (``inplace`` included: the input is left untouched)."""
    return args[0] if args else kwargs["input"]


def _no_dilation(dilation) -> None:
    if any(d != 1 for d in (dilation if isinstance(dilation, (list, tuple)) else [dilation])):
        raise NotImplementedError("linearized(): max pooling with dilation has no average-pooling counterpart here")


def _pool(avg_pool: Callable, max_pool_with_indices: Callable, always_indices: bool) -> Callable:
    """A max-pool replacement taking the max pool's arguments, returning what the max pool would have returned."""

    def pool(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
        _no_dilation(dilation)
        stride = stride or None  # torch.max_pool2d's default stride is [], avg_pool's is None; both mean the kernel
        averaged = avg_pool(input, kernel_size, stride, padding, ceil_mode, count_include_pad=False)
        if not (always_indices or return_indices):
            return averaged
        _, indices = max_pool_with_indices(input.detach(), kernel_size, stride, padding, dilation, ceil_mode)
        return averaged, indices

    return pool


def _adaptive_pool(always_indices: bool) -> Callable:
    def pool(input, output_size, return_indices=False):
        averaged = F.adaptive_avg_pool2d(input, output_size)
        if not (always_indices or return_indices):
            return averaged
        return averaged, F.adaptive_max_pool2d_with_indices(input.detach(), output_size)[1]

    return pool


def _local_response_norm(input, size, alpha=1e-4, beta=0.75, k=1.0):
    """d/dx of x / (k + alpha/n * sum x^2)^beta at x = 0 is 1 / k^beta."""
    return input / k**beta


_IDENTITIES = (
    F.relu, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_, F.relu6, F.hardtanh, F.hardtanh_,
    F.leaky_relu, F.leaky_relu_, F.gelu, F.silu, F.elu, F.elu_,
    F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout, torch.dropout,
)

# F.max_pool2d is a boolean_dispatch wrapper: without indices the mode receives the wrapper itself, with indices
# F.max_pool2d_with_indices (tests/test_vision_weights.py checks both); code may also call the torch.* ops directly.
_REPLACEMENTS: dict[Callable, Callable] = {
    **{f: _identity for f in _IDENTITIES},
    F.max_pool1d: _pool(F.avg_pool1d, F.max_pool1d_with_indices, always_indices=False),
    torch.max_pool1d: _pool(F.avg_pool1d, F.max_pool1d_with_indices, always_indices=False),
    F.max_pool1d_with_indices: _pool(F.avg_pool1d, F.max_pool1d_with_indices, always_indices=True),
    F.max_pool2d: _pool(F.avg_pool2d, F.max_pool2d_with_indices, always_indices=False),
    torch.max_pool2d: _pool(F.avg_pool2d, F.max_pool2d_with_indices, always_indices=False),
    F.max_pool2d_with_indices: _pool(F.avg_pool2d, F.max_pool2d_with_indices, always_indices=True),
    F.adaptive_max_pool2d: _adaptive_pool(always_indices=False),
    F.adaptive_max_pool2d_with_indices: _adaptive_pool(always_indices=True),
    F.local_response_norm: _local_response_norm,
}


class _Linearized(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        # The mode is switched off while this runs, so the replacements call the real torch functions.
        return _REPLACEMENTS.get(func, func)(*args, **(kwargs or {}))


@contextmanager
def linearized() -> Iterator[None]:
    """Within the block, torch's nonlinearities compute their linear counterparts (see the module docstring)."""
    with _Linearized():
        yield
