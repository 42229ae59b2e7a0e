"""The render's fast forms compute what the network computes: the banded LRN against torch's, in values and
gradients; the swap reaches functional and module LRNs; bfloat16 stays inside its block; a bfloat16 render reaches
what a float32 one does; glibc's allocator takes the job's settings."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import render.fast_forward as fast
from precompute.allocator import keep_freed_memory
from precompute.loaders import load_tinyvision
from render.featvis import FLOAT32_TAIL_FRACTION, RenderConfig, render_units


@pytest.mark.parametrize("size, alpha, beta, k", [
    (9, 9.99999974738e-05, 0.5, 1.0),  # InceptionV1's (lucid)
    (5, 1e-4, 0.75, 1.0),  # Caffe's AlexNet and GoogLeNet
    (4, 0.3, 0.6, 2.0),  # an even window, uneven at the ends, and constants large enough to matter
])
def test_banded_lrn_equals_torch_lrn_in_values_and_gradients(size, alpha, beta, k):
    torch.manual_seed(0)
    x = (torch.randn(2, 12, 5, 7, dtype=torch.float64) * 20).requires_grad_()
    upstream = torch.randn(2, 12, 5, 7, dtype=torch.float64)
    expected = F.local_response_norm(x, size, alpha, beta, k)
    found = fast.banded_local_response_norm(x, size, alpha, beta, k)
    torch.testing.assert_close(found, expected)
    torch.testing.assert_close(torch.autograd.grad(found, x, upstream)[0],
                               torch.autograd.grad(expected, x, upstream)[0])


class Normalised(nn.Module):
    """One LRN called as a function (as lucent's InceptionV1 does), one as a module (as Caffe's nets do)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3)
        self.norm = nn.LocalResponseNorm(5, alpha=1e-2, beta=0.75, k=1.0)

    def forward(self, x):
        return self.norm(F.local_response_norm(self.conv(x), size=9, alpha=1e-2, beta=0.5, k=1.0))


def test_fast_forward_swaps_every_lrn_and_changes_no_value(monkeypatch):
    calls = []
    banded = fast.banded_local_response_norm
    monkeypatch.setattr(fast, "banded_local_response_norm", lambda *a, **kw: calls.append(a[1:]) or banded(*a, **kw))
    torch.manual_seed(0)
    net, x = Normalised(), torch.rand(2, 3, 20, 20) * 50
    expected = net(x)
    assert calls == []
    with fast.fast_forward():
        found = net(fast.channels_last(x))
    assert sorted(size for size, *_ in calls) == [5, 9]
    torch.testing.assert_close(found, expected, rtol=1e-5, atol=1e-6)


def test_bfloat16_stays_inside_its_block():
    conv, x = nn.Conv2d(3, 4, 3), torch.rand(1, 3, 8, 8)
    with fast.fast_forward("bfloat16"):
        assert conv(x).dtype == torch.bfloat16
    assert conv(x).dtype == torch.float32
    with pytest.raises(ValueError, match="precision must be one of"):
        with fast.fast_forward("float16"):
            pass


def test_a_bfloat16_render_reaches_what_float32_reaches_and_says_how_it_was_made():
    model = load_tinyvision()
    units = list(range(6))
    config = RenderConfig(steps=128, size=64, seed=0)
    reference = render_units(model, model.conv3, units, "channel", config)
    other_seed = render_units(model, model.conv3, units, "channel", RenderConfig(steps=128, size=64, seed=1))
    bfloat16 = render_units(model, model.conv3, units, "channel",
                            RenderConfig(steps=128, size=64, precision="bfloat16"))
    assert bfloat16.images.dtype == torch.float32
    # Objectives are scored in float32 on the final images: bfloat16's sit where another seed's do.
    chance = (other_seed.activations / reference.activations).median()
    assert (bfloat16.activations / reference.activations).median() > min(0.95, chance - 0.03)
    assert bfloat16.params["precision"] == "bfloat16" and reference.params["precision"] == "float32"
    assert bfloat16.params["float32_steps"] == f"the last {int(128 * FLOAT32_TAIL_FRACTION)}"
    assert "float32_steps" not in reference.params


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_allocator_takes_the_jobs_settings():
    assert keep_freed_memory()
