"""DeltaNet and Gated DeltaNet against their papers' recurrences, written out here token by token."""
import math

import pytest
import torch
import torch.nn.functional as F

from recall_lm.layers.registry import build_mixer
from recall_lm.models.config import ModelConfig
from recall_lm.training.task import LanguageModelTask

torch.manual_seed(0)


def convolved_streams(layer, x):
    """q, k, v [B, T, width] of a delta-family layer: projection, causal depthwise convolution (last tap =
    current token) when the layer has one, then SiLU, written out."""
    T = x.shape[1]

    def stream(proj, conv):
        y = proj(x)
        if layer.use_short_conv:
            W = conv.conv.weight  # [C, 1, K]
            K = W.shape[-1]
            padded = F.pad(y, (0, 0, K - 1, 0))
            y = sum(W[:, 0, i] * padded[:, i : i + T] for i in range(K))
        return F.silu(y)

    return tuple(stream(getattr(layer, f"{c}_proj"), getattr(layer, f"{c}_conv", None)) for c in "qkv")


def assert_layer_is(layer, reference, x):
    """The layer's output and the gradients of x and of every parameter equal ``reference(layer, x)``'s."""
    x = x.clone().requires_grad_()
    got, want = layer(x)[0], reference(layer, x)
    torch.testing.assert_close(got, want)
    dy = torch.randn_like(got)
    params = [x, *layer.parameters()]
    for g_got, g_want in zip(torch.autograd.grad(got, params, dy), torch.autograd.grad(want, params, dy)):
        torch.testing.assert_close(g_got, g_want)


def paper_forward(layer, x):
    """S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ, o_t = S_tᵀ q_t / √d, from the layer's
    projections."""
    B, T, _ = x.shape
    H, D, Dv = layer.num_heads, layer.head_dim, layer.value_dim
    q, k, v = (s.view(B, T, H, -1) for s in convolved_streams(layer, x))
    if layer.qk_norm == "l2":
        q, k = q / q.norm(dim=-1, keepdim=True), k / k.norm(dim=-1, keepdim=True)
    beta = torch.sigmoid(layer.b_proj(x)) * (2 if layer.allow_neg_eigval else 1)
    gated = hasattr(layer, "A_log")
    if gated:
        alpha = torch.exp(-torch.exp(layer.A_log) * F.softplus(layer.a_proj(x) + layer.dt_bias))
    S = x.new_zeros(B, H, D, Dv)
    eye = torch.eye(D, dtype=x.dtype)
    outs = []
    for t in range(T):
        kt, vt, bt = k[:, t], v[:, t], beta[:, t, :, None, None]
        A = eye - bt * kt[..., :, None] * kt[..., None, :]
        if gated:
            A = alpha[:, t, :, None, None] * A
        S = A @ S + bt * kt[..., :, None] * vt[..., None, :]
        outs.append(torch.einsum("bhkv,bhk->bhv", S, q[:, t]) / math.sqrt(D))
    o = layer.o_norm(torch.stack(outs, 1))
    if gated and layer.g_proj is not None:
        o = o * F.silu(layer.g_proj(x)).view(B, T, H, Dv)
    return layer.o_proj(o.reshape(B, T, H * Dv))


@pytest.mark.parametrize("name", ["deltanet", "gated_deltanet"])
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"use_short_conv": False, "qk_norm": "none", "allow_neg_eigval": True},
        {"num_heads": 2, "head_dim": 12, "conv_size": 3},
        {"num_heads": 2, "expand_v": 2},
    ],
)
def test_layer_is_the_papers_recurrence(name, kwargs):
    _check_layer(name, kwargs)


def test_gated_deltanet_without_output_gate():
    _check_layer("gated_deltanet", {"output_gate": False})


def _check_layer(name, kwargs):
    layer = build_mixer(name, 16, **kwargs).double()
    if kwargs.get("qk_norm") == "none":  # keep ‖k‖ ≤ 1 without the norm, so the recurrence stays bounded
        torch.nn.init.normal_(layer.k_proj.weight, std=0.05)
    x = torch.randn(2, 21, 16, dtype=torch.float64)
    assert_layer_is(layer, paper_forward, x)


def test_gated_deltanet_initialisation_follows_mamba2():
    layer = build_mixer("gated_deltanet", 64, num_heads=256 // 4, head_dim=4)
    A = layer.A_log.exp()
    assert (A > 0).all() and (A <= 16).all() and A.std() > 2  # U(0, 16): std 16/√12 ≈ 4.6
    dt = F.softplus(layer.dt_bias)
    assert (dt >= 1e-3 * 0.999).all() and (dt <= 0.1 * 1.001).all()
    assert dt.log().std() > 0.8  # log-uniform over ln(100) ≈ 4.6: std ≈ 1.33


def test_decay_parameters_are_never_weight_decayed():
    config = ModelConfig(vocab_size=32, d_model=16, n_layers=1, mixer="gated_deltanet", mlp="none")
    task = LanguageModelTask(config, weight_decay_on="all")
    decayed, plain = task.build_optimizer().param_groups
    mixer = task.model.blocks[0].mixer
    plain_ids = {id(p) for p in plain["params"]}
    assert id(mixer.A_log) in plain_ids and id(mixer.dt_bias) in plain_ids
    assert id(mixer.q_proj.weight) not in plain_ids and len(plain_ids) == 2


@pytest.mark.parametrize("kwargs, message", [
    ({"num_heads": 3}, "num_heads=3 must divide d_model=16"),
    ({"qk_norm": "layer"}, "qk_norm"),
    ({"conv_size": 1}, "conv_size"),
])
def test_bad_options_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_mixer("deltanet", 16, **kwargs)
