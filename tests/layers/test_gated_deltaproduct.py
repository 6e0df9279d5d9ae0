"""Gated DeltaProduct against the DeltaProduct paper's recurrence, written out here: the gate once per
token, then n_h generalised-Householder steps in order, the output read after the last; with and
without the forget gate and the output gate, negative eigenvalues, n_h = 1 (Gated DeltaNet) and bad
options."""

import math

import pytest
import torch
import torch.nn.functional as F

from recall_lm.layers.registry import build_mixer
from tests.layers.test_deltanet import assert_layer_is, convolved_streams


def paper_forward(layer, x):
    """S_{t,0} = α_t S_{t−1}; S_{t,j} = (I − β_{t,j} k_{t,j} k_{t,j}ᵀ) S_{t,j−1} + β_{t,j} k_{t,j} v_{t,j}ᵀ;
    o_t = S_{t,n_h}ᵀ q_t / √d_k."""
    B, T, _ = x.shape
    H, D, Dv, n = layer.num_heads, layer.head_dim, layer.value_dim, layer.num_householder
    q, k, v = convolved_streams(layer, x)
    q = F.normalize(q.view(B, T, H, D), dim=-1)
    k = F.normalize(k.view(B, T, n, H, D), dim=-1)
    v = v.view(B, T, n, H, Dv)
    beta = (torch.sigmoid(layer.b_proj(x)) * (2 if layer.allow_neg_eigval else 1)).view(B, T, n, H)
    if layer.use_forget_gate:
        alpha = torch.exp(-torch.exp(layer.A_log) * F.softplus(layer.a_proj(x) + layer.dt_bias))
    S = x.new_zeros(B, H, D, Dv)
    eye = torch.eye(D, dtype=x.dtype)
    outs = []
    for t in range(T):
        if layer.use_forget_gate:
            S = alpha[:, t, :, None, None] * S
        for j in range(n):
            kj, vj, bj = k[:, t, j], v[:, t, j], beta[:, t, j, :, None, None]
            S = (eye - bj * kj[..., :, None] * kj[..., None, :]) @ S + bj * kj[..., :, None] * vj[
                ..., None, :
            ]
        outs.append(torch.einsum("bhkv,bhk->bhv", S, q[:, t]) / math.sqrt(D))
    o = layer.o_norm(torch.stack(outs, 1))
    if layer.g_proj is not None:
        o = o * F.silu(layer.g_proj(x)).view(B, T, H, Dv)
    return layer.o_proj(o.reshape(B, T, H * Dv))


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {
            "num_heads": 2,
            "num_householder": 3,
            "use_forget_gate": False,
            "output_gate": False,
            "chunk_size": 16,
        },
        {"num_heads": 2, "num_householder": 1, "allow_neg_eigval": False, "use_short_conv": False},
        {"num_householder": 2, "expand_v": 2, "conv_size": 3},
    ],
)
def test_layer_is_the_papers_recurrence(kwargs):
    layer = build_mixer("gated_deltaproduct", 16, **kwargs).double()
    x = torch.randn(2, 21, 16, dtype=torch.float64)
    assert_layer_is(layer, paper_forward, x)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_householder": 0}, "gated_deltaproduct: num_householder must be an integer ≥ 1, got 0"),
        ({"num_householder": 1.5}, "num_householder must be an integer"),
        ({"num_heads": 3}, "num_heads=3 must divide d_model=16"),
    ],
)
def test_bad_options_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_mixer("gated_deltaproduct", 16, **kwargs)
