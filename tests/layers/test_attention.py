"""Softmax attention and linear attention against direct quadratic references written here."""
import math

import pytest
import torch

from layers import build_mixer
from layers.feature_maps import TaylorFeatureMap, build_feature_map


def rope_reference(x, base=10000.0):
    """Rotate pairs (i, i + D/2) by position · base^(-2i/D); x: [B, T, H, D] in fp64."""
    B, T, H, D = x.shape
    freq = base ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
    angle = torch.arange(T, dtype=torch.float64)[:, None] * freq  # [T, D/2]
    cos, sin = angle.cos()[None, :, None], angle.sin()[None, :, None]
    a, b = x[..., : D // 2], x[..., D // 2 :]
    return torch.cat([a * cos - b * sin, b * cos + a * sin], -1)


def test_attention_matches_explicit_softmax():
    torch.manual_seed(0)
    d, H, T = 32, 2, 13
    mixer = build_mixer("attention", d, num_heads=H).double()
    x = torch.randn(2, T, d, dtype=torch.float64)
    y, _ = mixer(x)
    q, k, v = (mixer.qkv(x).view(2, T, 3, H, d // H).unbind(2))
    q, k = rope_reference(q), rope_reference(k)
    scores = torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(d // H)
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    o = torch.einsum("bhij,bjhd->bihd", scores.softmax(-1), v).reshape(2, T, d)
    torch.testing.assert_close(y, mixer.out(o))


@pytest.mark.parametrize("symmetric", [False, True])
def test_taylor_kernel_identity(symmetric):
    torch.manual_seed(0)
    d = 6
    phi = TaylorFeatureMap(symmetric=symmetric)
    q, k = torch.randn(50, d, dtype=torch.float64), torch.randn(50, d, dtype=torch.float64)
    dot = (q * k).sum(-1)
    expected = 1 + dot / math.sqrt(d) + dot**2 / (2 * d)
    torch.testing.assert_close((phi(q) * phi(k)).sum(-1), expected)
    assert phi(q).shape[-1] == phi.output_dim(d) == (1 + d + (d * (d + 1) // 2 if symmetric else d * d))


@pytest.mark.parametrize("feature_map,normalize", [("elu", True), ("taylor", True), ("identity", False)])
def test_linear_attention_matches_quadratic_form(feature_map, normalize):
    """o_i = Σ_{j≤i} (φ(q_i)·φ(k_j)) v_j [/ Σ_{j≤i} φ(q_i)·φ(k_j)], computed as a masked T×T product."""
    torch.manual_seed(0)
    d, H, T, F = 16, 2, 21, 4
    mixer = build_mixer("linear_attention", d, num_heads=H, feature_map=feature_map,
                        feature_dim=F, normalize=normalize).double()
    x = torch.randn(2, T, d, dtype=torch.float64, requires_grad=True)
    y, _ = mixer(x)
    phi = build_feature_map(feature_map)
    q, k = mixer.qk(x).view(2, T, 2, H, F).unbind(2)
    scores = torch.einsum("bihf,bjhf->bhij", phi(q), phi(k)).tril()
    v = mixer.v(x).view(2, T, H, d // H)
    o = torch.einsum("bhij,bjhd->bihd", scores, v)
    if normalize:
        o = o / (scores.sum(-1).transpose(1, 2)[..., None] + mixer.eps)
    expected = mixer.out(o.reshape(2, T, d))
    torch.testing.assert_close(y, expected)
    g1 = torch.autograd.grad(y.square().sum(), [x, mixer.qk.weight, mixer.v.weight])
    g2 = torch.autograd.grad(expected.square().sum(), [x, mixer.qk.weight, mixer.v.weight])
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)
