"""Kimi Delta Attention against the Kimi Linear paper's recurrence, written out here token by token: both
gates, negative eigenvalues, no convolutions, wide values; its initialisation and bad options."""

import math

import pytest
import torch
import torch.nn.functional as F

from recall_lm.layers.registry import build_mixer
from tests.layers.test_deltanet import assert_layer_is, convolved_streams


def paper_forward(layer, x):
    """S_t = (I − β_t k_t k_tᵀ) Diag(α_t) S_{t−1} + β_t k_t v_tᵀ, o_t = S_tᵀ q_t / √d_k, α_t per key channel;
    each head's output RMSNorm(o) ⊙ sigmoid(g), then projected."""
    B, T, _ = x.shape
    H, D, Dv = layer.num_heads, layer.head_dim, layer.value_dim
    q, k, v = (s.view(B, T, H, -1) for s in convolved_streams(layer, x))
    q, k = q / q.norm(dim=-1, keepdim=True), k / k.norm(dim=-1, keepdim=True)
    beta = torch.sigmoid(layer.b_proj(x)) * (2 if layer.allow_neg_eigval else 1)
    f = (layer.f_proj[1](layer.f_proj[0](x)) + layer.dt_bias).view(B, T, H, D)
    A = layer.A_log.exp()[:, None]
    if layer.gate == "sigmoid":
        log_alpha = layer.lower_bound * torch.sigmoid(A * f)
    else:
        log_alpha = -A * torch.log1p(torch.exp(f))
    S = x.new_zeros(B, H, D, Dv)
    eye = torch.eye(D, dtype=x.dtype)
    outs = []
    for t in range(T):
        kt, vt, bt = k[:, t], v[:, t], beta[:, t, :, None, None]
        householder = eye - bt * kt[..., :, None] * kt[..., None, :]
        S = (
            householder @ torch.diag_embed(log_alpha[:, t].exp()) @ S
            + bt * kt[..., :, None] * vt[..., None, :]
        )
        outs.append(torch.einsum("bhkv,bhk->bhv", S, q[:, t]) / math.sqrt(D))
    o = torch.stack(outs, 1)
    o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + layer.o_norm.eps) * layer.o_norm.weight
    o = o * torch.sigmoid(layer.g_proj[1](layer.g_proj[0](x))).view(B, T, H, Dv)
    return layer.o_proj(o.reshape(B, T, H * Dv))


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"num_heads": 2, "gate": "sigmoid", "lower_bound": -2.0, "allow_neg_eigval": True, "chunk_size": 16},
        {"num_heads": 2, "head_dim": 12, "use_short_conv": False, "expand_v": 2},
    ],
)
def test_layer_is_the_papers_recurrence(kwargs):
    layer = build_mixer("kda", 16, **kwargs).double()
    with torch.no_grad():
        layer.g_proj[1].bias.normal_()
        layer.A_log.normal_(0.0, 0.5)  # gates of every strength, the sigmoid gate away from its A = 1 init
    x = torch.randn(2, 21, 16, dtype=torch.float64)
    assert_layer_is(layer, paper_forward, x)


def test_initialisation_and_gate_ranges():
    layer = build_mixer("kda", 64, num_heads=16, head_dim=4)
    A = layer.A_log.exp()
    assert (A >= 1).all() and (A <= 16).all()
    dt = F.softplus(layer.dt_bias)
    assert dt.shape == (64,) and (dt >= 1e-3 * 0.999).all() and (dt <= 0.1 * 1.001).all()
    sigmoid = build_mixer("kda", 64, num_heads=16, gate="sigmoid", lower_bound=-4.0)
    assert (sigmoid.A_log == 0).all()
    g = sigmoid._channel_log_decay(torch.randn(2, 9, 64) * 30)
    assert g.shape == (2, 9, 16, 4) and (g >= -4.0).all() and (g < 0).all() and g.min() < -3.9


def test_negative_eigenvalues_reach_minus_one():
    """With ``allow_neg_eigval`` β spans (0, 2): the Householder part's eigenvalue 1 − β along k is < 0."""
    layer = build_mixer("kda", 16, allow_neg_eigval=True)
    with torch.no_grad():
        layer.b_proj.weight.fill_(1.0)
    beta = layer._beta(torch.ones(1, 1, 16))
    assert beta.item() > 1.99


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"gate": "exp"}, r"kda: gate must be one of \('softplus', 'sigmoid'\), got 'exp'"),
        ({"gate": "sigmoid", "lower_bound": 0.0}, "kda: lower_bound must be < 0"),
        ({"gate": "sigmoid", "lower_bound": 2}, "kda: lower_bound must be < 0"),
        ({"num_heads": 3}, "num_heads=3 must divide d_model=16"),
    ],
)
def test_bad_options_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_mixer("kda", 16, **kwargs)
