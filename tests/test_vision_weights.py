"""Linearised networks, receptive fields and expanded weights, checked against hand-written linear copies of small nets
(and, on the embedded organism, against the folded conv kernel they must reduce to)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.functional import jacobian

from render.linearize import linearized
from render.receptive_field import receptive_field
from render.vision_weights import NEGATIVE, POSITIVE, expanded_weights, folded_conv, kernel_image, strongest


def seeded_bn(channels: int) -> nn.BatchNorm2d:
    """A batchnorm with non-trivial statistics and affine parameters."""
    bn = nn.BatchNorm2d(channels)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(-2, 2)
        bn.bias.uniform_(-1, 1)
    return bn


def block(c_in: int, c_out: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False), seeded_bn(c_out),
                         nn.ReLU(inplace=True))


def affine(module: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """A conv-bn(-relu) block by hand, without its ReLU."""
    return module[1](module[0](x))


def avg(x: torch.Tensor, kernel: int, stride: int | None = None, padding: int = 0) -> torch.Tensor:
    return F.avg_pool2d(x, kernel, stride, padding, count_include_pad=False)


class Nonlinear(nn.Module):
    """Every kind of nonlinearity linearized() replaces, module and functional forms."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 5, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(3, 2, 1, ceil_mode=True)
        self.lrn = nn.LocalResponseNorm(3, k=2.0)
        self.adaptive = nn.AdaptiveMaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.relu(self.conv1(x)), inplace=True)
        x = self.conv2(F.leaky_relu(self.pool(x)))
        x, self.indices = F.max_pool2d(F.gelu(x), 2, return_indices=True)
        x = F.dropout(F.silu(self.lrn(F.elu(x))), 0.5, training=True)
        return self.adaptive(F.relu6(x))

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(F.avg_pool2d(self.before_indices(x), 2) / 2.0**0.75, 2)

    def before_indices(self, x: torch.Tensor) -> torch.Tensor:
        """The linear net up to the max pool whose indices forward() keeps."""
        return self.conv2(F.avg_pool2d(self.conv1(x), 3, 2, 1, ceil_mode=True, count_include_pad=False))


def test_linearized_turns_nonlinearities_into_their_linear_forms():
    torch.manual_seed(0)
    net, x = Nonlinear(), torch.randn(2, 3, 19, 17)
    with linearized():
        out = net(x)
    assert torch.allclose(out, net.linear(x), atol=1e-6)
    # Asked-for indices come from the real max pooling.
    assert torch.equal(net.indices, F.max_pool2d(net.before_indices(x), 2, return_indices=True)[1])
    assert not torch.allclose(net(x), net.linear(x), atol=1e-3)  # the mode is gone after the block


@pytest.mark.parametrize("f", [torch.relu, torch.Tensor.relu, lambda x: x.relu_(), F.relu_, F.hardtanh_,
                               F.leaky_relu_, F.elu_, nn.Hardtanh(), nn.ReLU6(), nn.Dropout2d(), nn.ELU(inplace=True),
                               nn.SiLU(inplace=True), lambda x: torch.dropout(x, 0.5, True)])
def test_linearized_makes_each_activation_the_identity(f):
    x = torch.randn(2, 3, 5, 5)
    with linearized():
        assert torch.equal(f(x.clone()), x)


class Chain(nn.Module):
    """conv-bn-relu, optionally pooled, then conv-bn-relu."""

    def __init__(self, pool: nn.Module):
        super().__init__()
        self.block1, self.pool, self.block2 = block(3, 4), pool, block(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block2(self.pool(self.block1(x)))


class Mixed(nn.Module):
    """A residual add onto the source layer, then three concatenated branches (one max-pooled) plus a projection."""

    def __init__(self):
        super().__init__()
        self.stem, self.shortcut = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), seeded_bn(4)), nn.Conv2d(3, 4, 1)
        self.b1, self.b2, self.b3 = block(4, 3, 1), block(4, 2, 3), nn.Conv2d(4, 2, 1)
        self.pool, self.proj, self.out = nn.MaxPool2d(3, 1, 1), nn.Conv2d(4, 7, 1), nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.stem(x)  # the source layer
        a += self.shortcut(x)  # in place on stem's output
        a = F.relu(a, inplace=True)
        y = torch.cat([self.b1(a), self.b2(a), self.b3(self.pool(a))], dim=1)
        return self.out(F.relu(y + self.proj(a)))

    def tail(self, a: torch.Tensor) -> torch.Tensor:
        """From stem's output to out, linearised by hand."""
        y = torch.cat([affine(self.b1, a), affine(self.b2, a), self.b3(avg(a, 3, 1, 1))], dim=1)
        return y + self.proj(a)

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.stem(x) + self.shortcut(x))


def brute_kernels(tail, src_shape: tuple[int, int, int], centre: tuple[int, int]) -> torch.Tensor:
    """d tail(a)[:, centre] / d a by the full Jacobian: [C_dst, C_src, h_src, w_src]."""
    return jacobian(lambda a: tail(a[None])[0, :, centre[0], centre[1]], torch.zeros(src_shape))


def check_against(kernels, brute: torch.Tensor) -> None:
    """The kernels equal the brute-force Jacobian inside their window, and it is zero outside."""
    (top, left), (kh, kw) = kernels.offset, kernels.weights.shape[-2:]
    assert torch.allclose(kernels.weights, brute[..., top:top + kh, left:left + kw], atol=1e-6)
    outside = brute.clone()
    outside[..., top:top + kh, left:left + kw] = 0
    assert not outside.any()


def test_expanded_weights_of_directly_connected_layers_are_the_folded_kernels():
    torch.manual_seed(1)
    net = Chain(nn.Identity()).eval()
    kernels = expanded_weights(net, net.block1, net.block2, (3, 9, 9), chunk=2)
    assert kernels.centre == (4, 4) and kernels.offset == (3, 3)
    assert torch.allclose(kernels.weights, folded_conv(net.block2[0], net.block2[1]), atol=1e-6)


@pytest.mark.parametrize("pool", [nn.MaxPool2d(2), nn.AvgPool2d(2)])
def test_expanded_weights_through_pooling_spread_the_kernel_over_the_pool(pool):
    torch.manual_seed(2)
    net = Chain(pool).eval()
    kernels = expanded_weights(net, net.block1, net.block2, (3, 12, 12), chunk=3)
    folded = folded_conv(net.block2[0], net.block2[1])  # [5, 4, 3, 3]
    assert kernels.centre == (3, 3) and kernels.offset == (4, 4)  # pooled cells 2..4 are block1 cells 4..9
    assert torch.allclose(kernels.weights, folded.repeat_interleave(2, 2).repeat_interleave(2, 3) / 4, atol=1e-6)


def test_expanded_weights_through_overlapping_padded_max_pooling():
    torch.manual_seed(3)
    net = Chain(nn.MaxPool2d(3, 2, 1)).eval()
    kernels = expanded_weights(net, net.block1, net.block2, (3, 12, 12))
    check_against(kernels, brute_kernels(lambda a: affine(net.block2, avg(a, 3, 2, 1)), (4, 12, 12), kernels.centre))


def test_expanded_weights_through_concatenation_and_residual_add():
    torch.manual_seed(4)
    net = Mixed().eval()
    kernels = expanded_weights(net, net.stem, net.out, (3, 10, 10), chunk=4)
    assert kernels.weights.shape == (7, 4, 3, 3) and kernels.offset == (4, 4)
    check_against(kernels, brute_kernels(net.tail, (4, 10, 10), kernels.centre))


def test_expanded_weights_refuse_a_source_after_the_destination():
    net = Chain(nn.Identity()).eval()
    with pytest.raises(ValueError, match="exactly once"):
        expanded_weights(net, net.block2, net.block1, (3, 6, 6))


class Strided(nn.Module):
    """Padding, an overlapping padded max pool and a strided conv: receptive fields clipped at every border."""

    def __init__(self):
        super().__init__()
        self.conv1, self.pool, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(3, 2, 1), nn.Conv2d(
            4, 5, 5, stride=2, padding=2)
        self.out = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.conv2(self.pool(F.relu(self.conv1(x)))))

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(avg(self.conv1(x), 3, 2, 1))


@pytest.mark.parametrize("make, shape", [(Strided, (3, 23, 19)), (Mixed, (3, 10, 11))])
def test_receptive_field_boxes_are_the_gradient_support(make, shape):
    torch.manual_seed(5)
    net = make().eval()
    field = receptive_field(net, net.out, shape, chunk=16)
    support = jacobian(lambda x: net.linear(x[None])[0], torch.zeros(shape)).ne(0).any(dim=(0, 3))  # [h, w, H, W]
    assert field.grid == tuple(support.shape[:2]) and field.input == shape[1:]
    for y in range(field.grid[0]):
        for x in range(field.grid[1]):
            rows, cols = support[y, x].any(dim=1).nonzero()[:, 0], support[y, x].any(dim=0).nonzero()[:, 0]
            assert field.box(y, x) == (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1), (y, x)


def test_strongest_is_the_union_of_each_sides_top_k():
    torch.manual_seed(6)
    weights = torch.randn(6, 7, 3, 3)
    weights[0] *= 10  # dst 0 is every src unit's strongest output
    weights[1, 2] = 0  # a zero kernel is never listed
    norms = weights.flatten(2).norm(dim=2)
    k = 2
    expected = {(d, s) for d in range(6) for s in sorted(range(7), key=lambda s: -norms[d, s])[:k]}
    expected |= {(d, s) for s in range(7) for d in sorted(range(6), key=lambda d: -norms[d, s])[:k]}
    expected -= {(1, 2)}
    pairs, signed = strongest(weights, k)
    assert pairs.dtype == torch.long and [tuple(p) for p in pairs.tolist()] == sorted(expected)
    for (d, s), value in zip(pairs.tolist(), signed.tolist()):
        assert value == pytest.approx(norms[d, s].item() * (1 if weights[d, s].sum() >= 0 else -1))


def test_kernel_image_tells_signs_apart():
    image = kernel_image(torch.tensor([[1.0, -1.0], [0.0, 3.0]]), scale=2.0)
    assert image.shape == (3, 2, 2) and image.min() >= 0 and image.max() <= 1
    red, blue = image[:, 0, 0], image[:, 0, 1]
    assert red[0] > red[2] and blue[2] > blue[0]
    assert torch.equal(image[:, 1, 0], torch.ones(3))  # white at 0
    assert torch.allclose(image[:, 1, 1], torch.tensor(POSITIVE)) and torch.allclose(
        kernel_image(torch.tensor([[-5.0]]), 1.0)[:, 0, 0], torch.tensor(NEGATIVE))  # saturated at scale
    rgb = kernel_image(torch.tensor([[[0.0]], [[1.0]], [[-1.0]]]), 1.0)
    assert rgb.flatten().tolist() == [0.5, 1.0, 0.0]


def test_tinyvision_expanded_weights_through_its_max_pool_rank_like_the_folded_kernels():
    """conv3 -> MaxPool2d(2) -> conv4: each pooled cell's 2x2 average splits a 3x3 kernel over 6x6, so every expanded
    kernel's norm is half the folded one's and the rankings agree (float64, so near ties do not swap)."""
    from precompute.loaders import load_tinyvision

    model = load_tinyvision().double()
    kernels = expanded_weights(model, model.conv3, model.conv4, (3, 64, 64), chunk=128)
    assert kernels.weights.shape == (128, 96, 6, 6) and kernels.centre == (4, 4) and kernels.offset == (6, 6)
    expanded = kernels.weights.flatten(2).norm(dim=2)  # [128, 96]
    folded = folded_conv(model.conv4[0], model.conv4[1])  # [128, 96, 3, 3]
    direct = folded.flatten(2).norm(dim=2)
    assert torch.allclose(expanded, direct / 2, rtol=1e-9)
    assert torch.equal(expanded.argsort(dim=1, descending=True), direct.argsort(dim=1, descending=True))
    assert torch.equal(strongest(kernels.weights, 8)[0], strongest(folded, 8)[0])
