"""The ``fox`` layer's Pro parts against the Forgetting Transformer paper's equations written out here in
fp64 (fla's layer has only qk_norm and the output gate: tests/layers/test_fox_fla.py): the data-dependent
key / value shift, the per-head output RMSNorm before the sigmoid output gate, QK-norm; and the bad
settings it refuses."""

import pytest
import torch
import torch.nn.functional as F

from recall_lm.layers.registry import build_mixer


def rms_per_head(x, weight, heads, eps=1e-5):
    h = x.unflatten(-1, (heads, -1))
    return (h * torch.rsqrt(h.square().mean(-1, keepdim=True) + eps)).flatten(-2) * weight


def shifted(x, raw, w_alpha):
    """k_t = α_t k̃_{t−1} + (1 − α_t) k̃_t per head, α_t = σ(w_α x_t), k̃_{−1} = 0."""
    alpha = torch.sigmoid(x @ w_alpha.T)[..., None]
    before = torch.cat([torch.zeros_like(raw[:, :1]), raw[:, :-1]], 1)
    return alpha * before + (1 - alpha) * raw


def reference(layer, x):
    H, Hk, D = layer.num_heads, layer.num_kv_heads, layer.head_dim
    q = x @ layer.q_proj.weight.T
    k = (x @ layer.k_proj.weight.T).unflatten(-1, (Hk, D))
    v = (x @ layer.v_proj.weight.T).unflatten(-1, (Hk, D))
    k, v = shifted(x, k, layer.k_shift_proj.weight), shifted(x, v, layer.v_shift_proj.weight)
    q = rms_per_head(q, layer.q_norm.weight, H).unflatten(-1, (H, D))
    k = rms_per_head(k.flatten(-2), layer.k_norm.weight, Hk).unflatten(-1, (Hk, D))
    c = F.logsigmoid(x @ layer.f_proj.weight.T + layer.f_proj.bias).cumsum(1)  # [B, T, H]
    k, v = k.repeat_interleave(H // Hk, 2), v.repeat_interleave(H // Hk, 2)
    scores = torch.einsum("bihd,bjhd->bhij", q, k) / D**0.5
    scores = scores + c.transpose(1, 2)[..., :, None] - c.transpose(1, 2)[..., None, :]
    T = x.shape[1]
    scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    o = torch.einsum("bhij,bjhd->bihd", scores.softmax(-1), v).flatten(-2)
    o = rms_per_head(o, layer.o_norm.weight, H) * torch.sigmoid(x @ layer.g_proj.weight.T)
    return o @ layer.o_proj.weight.T


def test_pro_block_matches_the_papers_equations():
    torch.manual_seed(0)
    layer = build_mixer("fox", 32, num_heads=4, num_kv_heads=2, qk_norm=True, output_gate=True,
                        output_norm=True, kv_shift=True).double()
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.3 * torch.randn_like(p))
    x = torch.randn(2, 29, 32, dtype=torch.float64)
    torch.testing.assert_close(layer(x)[0], reference(layer, x), rtol=1e-10, atol=1e-10)


def test_kv_shift_does_not_cross_documents():
    """With packed documents the shift starts from zero at each document (the protocol tests check the
    whole layer; here the shifted key of a document's first token is its own k̃ times 1 − α)."""
    from recall_lm.layers.documents import Documents

    torch.manual_seed(1)
    layer = build_mixer("fox", 16, num_heads=2, kv_shift=True).double()
    x = torch.randn(1, 10, 16, dtype=torch.float64)
    docs = Documents.from_cu_seqlens(torch.tensor([0, 4, 10]), 10)
    packed = layer(x, documents=docs)[0]
    alone = torch.cat([layer(x[:, :4])[0], layer(x[:, 4:])[0]], 1)
    torch.testing.assert_close(packed, alone, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kwargs, message", [
    ({"num_heads": 4, "num_kv_heads": 3}, "num_kv_heads=3 must be ≥ 1 and divide num_heads=4"),
    ({"num_heads": 2, "window_size": 0}, "window_size must be None or an integer ≥ 1"),
    ({"num_heads": 3}, "num_heads=3 must be ≥ 1 and divide d_model=32"),
])
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_mixer("fox", 32, **kwargs)
