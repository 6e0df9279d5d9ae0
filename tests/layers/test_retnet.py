"""RetNet multi-scale retention: the parallel form with an explicit decay matrix (written here, fp64)
against the mixer's chunked path and its token-by-token decoding, gradients, long sequences."""
import math

import pytest
import torch
import torch.nn.functional as F

from recall_lm.layers.registry import build_mixer
from tests.fla_files import load_fla_file

D_MODEL = 32
REF_TOL = dict(atol=1e-9, rtol=1e-9)  # fp64 everywhere


def make(seed=0, dtype=torch.float64, **kwargs):
    torch.manual_seed(seed)
    m = build_mixer("retnet", D_MODEL, **{"num_heads": 2, **kwargs})
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p) * 0.3 + (1.0 if p.ndim == 1 else 0.0))
    return m.to(dtype)


def rope(x, positions, base=10000.0):
    """Rotate channel pairs (i, i + D/2) by positions * base^(-2i/D). x [B, T, H, D], positions [T]."""
    D = x.shape[-1]
    freq = base ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
    ang = positions.double()[:, None] * freq  # [T, D/2]
    cos, sin = ang.cos()[None, :, None], ang.sin()[None, :, None]
    a, b = x[..., : D // 2], x[..., D // 2 :]
    return torch.cat([a * cos - b * sin, b * cos + a * sin], -1)


def retention_parallel(q, k, v):
    """(Q Kᵀ ⊙ D) V / √d_k per head, D_nm = γ_h^(n−m) for n ≥ m, γ_h = 1 − 2^(−5−h). q, k, v [B, T, H, *]."""
    B, T, H, Dk = q.shape
    gamma = 1.0 - 2.0 ** (-5.0 - torch.arange(H, dtype=torch.float64))
    n = torch.arange(T)
    diff = n[:, None] - n[None, :]
    D = gamma[:, None, None] ** diff.clamp(min=0) * (diff >= 0)  # [H, T, T]
    scores = torch.einsum("bnhd,bmhd->bhnm", q, k) * Dk ** -0.5 * D
    return torch.einsum("bhnm,bmhe->bnhe", scores, v)


def retention_fla(q, k, v):
    naive = load_fla_file("ops/retention/naive.py").naive_retention
    o = naive(*(t.transpose(1, 2).float() for t in (q, k, v)))
    return o.transpose(1, 2).double()


def reference(m, x, core=retention_parallel):
    """The whole layer recomputed from m's weights in fp64."""
    B, T, _ = x.shape
    H = m.num_heads
    x = x.double()
    Wq, Wk, Wv, Wg, Wo = (lin.weight.double() for lin in (m.q_proj, m.k_proj, m.v_proj, m.g_proj, m.o_proj))
    q = (x @ Wq.T).view(B, T, H, -1)
    k = (x @ Wk.T).view(B, T, H, -1)
    v = (x @ Wv.T).view(B, T, H, -1)
    pos = torch.arange(T)
    o = core(rope(q, pos), rope(k, pos), v)
    o = o * torch.rsqrt(o.square().mean(-1, keepdim=True) + m.head_norm.eps) * m.head_norm.weight.double()
    return (o.reshape(B, T, -1) * F.silu(x @ Wg.T)) @ Wo.T


@pytest.mark.parametrize("kwargs", [{}, {"num_heads": 4, "expand_v": 1.0, "chunk_size": 16}])
def test_parallel_and_chunked_forms_agree(kwargs):
    m = make(**kwargs)
    x = torch.randn(2, 100, D_MODEL, dtype=torch.float64)
    torch.testing.assert_close(m(x)[0], reference(m, x), **REF_TOL)


def test_recurrent_form_agrees():
    """Token by token from the state (the recurrent form) vs the chunked path over several chunks."""
    m = make(num_heads=4, chunk_size=16)
    x = torch.randn(2, 36, D_MODEL, dtype=torch.float64)
    chunked, _ = m(x)
    state, steps = m.init_state(2, None, x.dtype), []
    for t in range(x.shape[1]):
        y, state = m(x[:, t : t + 1], state)
        steps.append(y)
    torch.testing.assert_close(torch.cat(steps, 1), chunked, atol=1e-10, rtol=1e-9)
    assert state.offset.tolist() == [36, 36]


def test_prefill_then_decode_across_chunks():
    m = make(chunk_size=16)
    x = torch.randn(2, 50, D_MODEL, dtype=torch.float64)
    ref, full = reference(m, x), m(x)[0]
    torch.testing.assert_close(full, ref, **REF_TOL)
    state = m.init_state(2, None, x.dtype)
    y1, state = m(x[:, :37], state)
    y2, state = m(x[:, 37:40], state)
    ys = [y1, y2]
    for t in range(40, 50):
        y, state = m(x[:, t : t + 1], state)
        ys.append(y)
    torch.testing.assert_close(torch.cat(ys, 1), full, atol=1e-10, rtol=1e-9)


def test_gradients_match_reference():
    m = make()
    x = torch.randn(2, 40, D_MODEL, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 40, D_MODEL, dtype=torch.float64)
    params = [m.q_proj.weight, m.k_proj.weight, m.g_proj.weight, m.head_norm.weight]
    got = torch.autograd.grad((m(x)[0] * w).sum(), [x, *params])
    want = torch.autograd.grad((reference(m, x) * w).sum(), [x, *params])
    for name, a, b in zip(["x", "q_proj", "k_proj", "g_proj", "head_norm"], got, want):
        torch.testing.assert_close(a, b, **REF_TOL, msg=name)


def test_matches_fla_naive_retention():
    m = make(num_heads=4)
    x = torch.randn(1, 48, D_MODEL, dtype=torch.float64)
    torch.testing.assert_close(m(x)[0], reference(m, x, core=retention_fla), atol=1e-4, rtol=1e-4)


def test_reference_can_fail():
    """The reference is sensitive to the decays: another γ gives a different output."""
    m = make()
    x = torch.randn(1, 30, D_MODEL, dtype=torch.float64)
    m.log_decays = tuple(math.log(0.5) for _ in m.log_decays)
    assert not torch.allclose(m(x)[0], reference(m, x), atol=1e-3)


def test_long_sequence_stays_finite():
    torch.manual_seed(0)
    m = build_mixer("retnet", 8, num_heads=2)
    x = torch.randn(1, 4096, 8, requires_grad=True)
    y, _ = m(x)
    y.square().mean().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


def test_state_size_and_shapes():
    m = build_mixer("retnet", D_MODEL, num_heads=2)  # d_k = 16, d_v = 32 per head
    state = m.init_state(3, None, torch.float32)
    _, state = m(torch.randn(3, 5, D_MODEL), state)
    assert state.S.shape == (3, 2, 16, 32) and state.offset.tolist() == [5, 5, 5]
    assert m.state_size() == 2 * 16 * 32 + 1 == state.numel_per_sequence()


@pytest.mark.parametrize("kwargs,match", [
    ({"num_heads": 3}, "num_heads=3"),
    ({"expand_v": 0.3}, "expand_v"),
    ({"num_heads": 0}, "num_heads=0"),
    ({"num_heads": 32}, "even"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_mixer("retnet", D_MODEL, **kwargs)
