"""Softmax attention and linear attention against direct quadratic references written here."""
import math

import pytest
import torch

from recall_lm.layers.feature_maps import TaylorFeatureMap, build_feature_map
from recall_lm.layers.registry import build_mixer


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


def _decode(mixer, state, xs):
    """Feed xs [B, n, d] one token at a time from ``state``; returns (outputs [B, n, d], state)."""
    outs = []
    for t in range(xs.shape[1]):
        y, state = mixer(xs[:, t : t + 1], state)
        outs.append(y)
    return torch.cat(outs, 1), state


@torch.no_grad()
def test_kv_cache_decode_writes_in_place_and_branches_stay_exact():
    """Decode steps append into the cache's buffers without copying them (same storage, capacity doubled
    once); continuing one older state twice (branching) copies, and every branch equals its full forward."""
    torch.manual_seed(0)
    d, H = 32, 2
    mixer = build_mixer("attention", d, num_heads=H).double().eval()
    prompt, a, b = (torch.randn(2, n, d, dtype=torch.float64) for n in (5, 7, 7))
    _, state = mixer(prompt, mixer.init_state(2, dtype=torch.float64))
    assert (state.length, state.capacity) == (5, 5)
    _, grown = mixer(a[:, :1], state)  # full: copies once into a buffer of twice the capacity
    assert grown.capacity == 10
    _, after = mixer(a[:, 1:2], grown)
    assert after.k.data_ptr() == grown.k.data_ptr() and after.v.data_ptr() == grown.v.data_ptr()
    y_a, _ = _decode(mixer, state, a)  # branch 1 from the prefilled state
    y_b, state_b = _decode(mixer, state, b)  # branch 2 from the same state: must not see branch 1's keys
    y_a2, _ = _decode(mixer, grown, a[:, 1:])  # an older state continued again after ``after`` wrote past it
    full_a, _ = mixer(torch.cat([prompt, a], 1))
    full_b, _ = mixer(torch.cat([prompt, b], 1))
    torch.testing.assert_close(y_a, full_a[:, 5:])
    torch.testing.assert_close(y_b, full_b[:, 5:])
    torch.testing.assert_close(y_a2, full_a[:, 6:])
    assert state_b.numel_per_sequence() == mixer.state_size(12) and state.length == 5


def test_kv_cache_under_autograd_appends_out_of_place():
    """With gradients the cache is concatenated, not written in place: backward through several decode
    steps equals backward through the full forward."""
    torch.manual_seed(0)
    d = 16
    mixer = build_mixer("attention", d, num_heads=2).double()
    x = torch.randn(1, 6, d, dtype=torch.float64, requires_grad=True)
    y_full, _ = mixer(x)
    g_full = torch.autograd.grad(y_full.square().sum(), x)[0]
    _, state = mixer(x[:, :3], mixer.init_state(1, dtype=torch.float64))
    y_steps, _ = _decode(mixer, state, x[:, 3:])
    y = torch.cat([mixer(x[:, :3])[0], y_steps], 1)
    torch.testing.assert_close(y, y_full)
    torch.testing.assert_close(torch.autograd.grad(y.square().sum(), x)[0], g_full)


def test_hard_alibi_heads_see_only_their_last_keys():
    """Jelassi et al.'s Hard-ALiBi: head h < m attends to keys t − h … t, the rest to every key ≤ t;
    written out with an explicit softmax per head, and decoding step by step gives the same."""
    torch.manual_seed(0)
    layer = build_mixer("attention", 16, num_heads=4, rotary=False, hard_alibi_heads=3).double().eval()
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    q, k, v = layer.qkv(x).view(2, 9, 3, 4, 4).unbind(2)
    scores = torch.einsum("bihd,bjhd->bhij", q, k) / 2.0
    i, j = torch.arange(9)[:, None], torch.arange(9)[None]
    for h in range(4):
        reach = h if h < 3 else 9
        scores[:, h] = scores[:, h].masked_fill(~((j <= i) & (i - j <= reach)), float("-inf"))
    o = torch.einsum("bhij,bjhd->bihd", scores.softmax(-1), v).reshape(2, 9, 16)
    torch.testing.assert_close(layer(x)[0], layer.out(o))
    state, steps = layer.init_state(2, dtype=torch.float64), []
    for t in range(9):
        y, state = layer(x[:, t : t + 1], state)
        steps.append(y)
    torch.testing.assert_close(torch.cat(steps, 1), layer.out(o))
    with pytest.raises(ValueError, match="hard_alibi_heads must be an integer in \\[0, num_heads=4\\]"):
        build_mixer("attention", 16, num_heads=4, hard_alibi_heads=5)
