"""Mamba-2 against the SSD recurrence of Dao & Gu (2024), written out here token by token."""
import math

import pytest
import torch
import torch.nn.functional as F

from recall_lm.layers.registry import build_mixer
from recall_lm.models.config import ModelConfig
from recall_lm.training.task import LanguageModelTask

torch.manual_seed(0)


def ssd_reference(layer, u):
    """h_t = exp(Δ_t A) h_{t−1} + Δ_t B_t x_tᵀ, y_t = h_tᵀ C_t + D x_t per head, then the gated norm."""
    Bsz, T, _ = u.shape
    H, P, N, E, G = layer.num_heads, layer.head_dim, layer.d_state, layer.d_inner, layer.n_groups
    z, xbc, dt = (u @ layer.in_proj.weight.T).split([E, E + 2 * G * N, H], -1)
    W, b = layer.conv.conv.weight, layer.conv.conv.bias  # causal depthwise conv, last tap = current token
    K = W.shape[-1]
    padded = F.pad(xbc, (0, 0, K - 1, 0))
    xbc = F.silu(sum(W[:, 0, i] * padded[:, i : i + T] for i in range(K)) + b)
    x, Bm, Cm = xbc.split([E, G * N, G * N], -1)
    Bm, Cm = Bm.view(Bsz, T, G, N), Cm.view(Bsz, T, G, N)
    group = torch.arange(H) // (H // G)  # the B/C group of each head
    dt = F.softplus(dt + layer.dt_bias)
    A = -torch.exp(layer.A_log)
    x = x.view(Bsz, T, H, P)
    h = u.new_zeros(Bsz, H, N, P)
    ys = []
    for t in range(T):
        decay = torch.exp(dt[:, t] * A)[..., None, None]  # [B, H, 1, 1]
        if layer.allow_neg_eigval:  # Grazzi et al.'s extended range: 2·exp(ΔA) − 1 ∈ (−1, 1)
            decay = 2 * decay - 1
        h = decay * h + dt[:, t, :, None, None] * Bm[:, t, group, :, None] * x[:, t, :, None, :]
        ys.append(torch.einsum("bhnp,bhn->bhp", h, Cm[:, t, group]) + layer.D[:, None] * x[:, t])
    y = (torch.stack(ys, 1).reshape(Bsz, T, E) * F.silu(z)).view(Bsz, T, G, E // G)
    y = (y / torch.sqrt(y.pow(2).mean(-1, keepdim=True) + layer.norm.eps)).reshape(
        Bsz, T, E
    ) * layer.norm.weight
    return y @ layer.out_proj.weight.T


@pytest.mark.parametrize(
    "kwargs",
    [
        {"d_state": 8, "head_dim": 8},
        {"d_state": 16, "head_dim": 16, "d_conv": 3},
        {"d_state": 4, "head_dim": 32, "expand": 1, "chunk_size": 16},
        {"d_state": 8, "head_dim": 8, "n_groups": 4},
        {"d_state": 8, "head_dim": 16, "allow_neg_eigval": True, "chunk_size": 16},
    ],
)
def test_layer_is_the_ssd_recurrence(kwargs):
    torch.manual_seed(1)
    layer = build_mixer("mamba2", 32, **kwargs).double()
    if kwargs.get("allow_neg_eigval"):  # Δ·A across (0, 3): transitions 2·exp(ΔA) − 1 of both signs
        with torch.no_grad():
            layer.A_log.zero_()
            layer.dt_bias.normal_(0.0, 1.0)
    u = torch.randn(2, 70, 32, dtype=torch.float64)
    torch.testing.assert_close(layer(u)[0], ssd_reference(layer, u))
    if kwargs.get("allow_neg_eigval"):
        dt = F.softplus(layer.in_proj(u)[..., -layer.num_heads :] + layer.dt_bias)
        transitions = 2 * torch.exp(-dt) - 1
        assert (transitions < 0).any() and (transitions > 0).any()


def test_initialisation_and_no_weight_decay():
    layer = build_mixer("mamba2", 256, d_state=16, head_dim=4)  # 128 heads
    A = layer.A_log.exp()
    assert (A >= 1).all() and (A <= 16).all() and A.std() > 2
    dt = F.softplus(layer.dt_bias)
    assert (dt >= 1e-3 * 0.999).all() and (dt <= 0.1 * 1.001).all() and dt.log().std() > 0.8
    assert (layer.D == 1).all()
    task = LanguageModelTask(ModelConfig(vocab_size=32, d_model=16, n_layers=1, mixer="mamba2",
                                         mixer_kwargs={"mamba2": {"d_state": 8, "head_dim": 8}}, mlp="none"),
                             weight_decay_on="all")
    _, plain = task.build_optimizer().param_groups
    mixer = task.model.blocks[0].mixer
    assert {id(p) for p in plain["params"]} == {id(mixer.A_log), id(mixer.dt_bias), id(mixer.D)}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"head_dim": 48}, "head_dim=48 must divide"),
        ({"d_conv": 1}, "d_conv"),
        ({"head_dim": 16, "n_groups": 3}, "n_groups=3"),
    ],
)
def test_bad_options_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_mixer("mamba2", 32, **kwargs)


def test_state_size():
    layer = build_mixer("mamba2", 32, d_state=8, head_dim=16)  # d_inner 64: 4 heads
    assert layer.state_size() == 4 * 8 * 16 + 3 * (64 + 16)
    assert math.prod(layer.init_state(2).S.shape[1:]) == 4 * 8 * 16
