"""Triton kernels for the chunk-local parts of the chunked DPLR delta rule (RWKV-7's op), besides the
per-channel decayed score matrices, which are gated linear attention's sub-chunked score kernels
(:mod:`recall_lm.kernels.gla.triton_forward` / ``triton_backward``) run on the chunked layout with one head.

Layout: the chunked fp32 layout of :mod:`recall_lm.kernels.dplr.chunked_torch` (``[BH, NT, C, *]`` contiguous,
chunk index ``bh·NT + c``), score matrices ``[BH, NT, C, C]``; G and G⁻ = G − gk the inclusive and
exclusive in-chunk cumsums of gk ``[BH, NT, C, K]``. Per chunk (notation of ``chunked_torch``):

* ``solve_fwd``: T = (I − A_ab)⁻¹ by forward substitution in registers, w = T (a ⊙ e^{G⁻}),
  u = T (A_ak V), Kd = k ⊙ e^{G_C − G}, Bd = b ⊙ e^{G_C − G}, decay = e^{G_C}.
* ``output``: O = scale [(q ⊙ e^G) S₀ + A_qk V + A_qb v₂].
* ``output_bwd``: dv₂⁰ = scale A_qbᵀ dO and dS⁰ = scale (q ⊙ e^G)ᵀ dO (the scan's inputs), and the
  output's share of dV, scale A_qkᵀ dO.
* ``local_bwd``: from the reverse scan's dv₂ and the state gradients, the gradients of the four score
  matrices (for the score kernels' backward), dV, and the parts of dq, dk, da, db, dG, dG⁻ that do not
  pass through the scores.
"""
from __future__ import annotations

import triton
import triton.language as tl

from recall_lm.kernels.delta.triton_local import BWD_LAUNCH, LAUNCH, _unit_lower_inverse  # noqa: F401 (launch settings)


@triton.jit
def _solve_tiles(A_ab, A_ak, a, Gx, chunk, o_c, ck_off, m_k, C: tl.constexpr):
    """(T = (I − A_ab)⁻¹, A_ak, a ⊙ e^{G⁻}) of one chunk: what w and u are made of."""
    cc_off = chunk * C * C + o_c[:, None] * C + o_c[None, :]
    b_T = _unit_lower_inverse(-tl.load(A_ab + cc_off), o_c, C)
    b_ax = tl.load(a + ck_off, mask=m_k[None, :], other=0.0) * tl.exp(
        tl.load(Gx + ck_off, mask=m_k[None, :], other=0.0)
    )
    return b_T, tl.load(A_ak + cc_off), b_ax


@triton.jit
def dplr_solve_fwd_kernel(
    k,
    v,
    a,
    b,
    G,
    Gx,
    A_ab,
    A_ak,
    w,
    u,
    kd,
    bd,
    decay,
    K: tl.constexpr,
    V: tl.constexpr,
    C: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    DOT_PREC: tl.constexpr,
):
    """Grid (BH·NT,). k, a, b, G, Gx, w, kd, bd [BH, NT, C, K]; v, u [BH, NT, C, V]; A_ab, A_ak
    [BH, NT, C, C] (strictly lower); decay [BH, NT, K]."""
    chunk = tl.program_id(0)
    o_c = tl.arange(0, C)
    o_k = tl.arange(0, BK)
    m_k = o_k < K
    ck_off = chunk * C * K + o_c[:, None] * K + o_k[None, :]
    b_T, b_ak, b_ax = _solve_tiles(A_ab, A_ak, a, Gx, chunk, o_c, ck_off, m_k, C)
    tl.store(w + ck_off, tl.dot(b_T, b_ax, input_precision=DOT_PREC), mask=m_k[None, :])
    b_g = tl.load(G + ck_off, mask=m_k[None, :], other=0.0)
    g_last = tl.load(G + chunk * C * K + (C - 1) * K + o_k, mask=m_k, other=0.0)
    tail = tl.exp(g_last[None, :] - b_g)
    tl.store(kd + ck_off, tl.load(k + ck_off, mask=m_k[None, :], other=0.0) * tail, mask=m_k[None, :])
    tl.store(bd + ck_off, tl.load(b + ck_off, mask=m_k[None, :], other=0.0) * tail, mask=m_k[None, :])
    tl.store(decay + chunk * K + o_k, tl.exp(g_last), mask=m_k)
    for i_v in range(0, V, BV):
        o_v = i_v + tl.arange(0, BV)
        cv_off = chunk * C * V + o_c[:, None] * V + o_v[None, :]
        b_v = tl.load(v + cv_off, mask=(o_v < V)[None, :], other=0.0)
        b_u = tl.dot(b_T, tl.dot(b_ak, b_v, input_precision=DOT_PREC), input_precision=DOT_PREC)
        tl.store(u + cv_off, b_u, mask=(o_v < V)[None, :])


@triton.jit
def dplr_output_kernel(q, G, v, A_qk, A_qb, states, v2, o, scale, K: tl.constexpr, V: tl.constexpr,
                       C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, DOT_PREC: tl.constexpr):
    """Grid (cdiv(V, BV), BH·NT). states [BH, NT, K, V] (chunk starts); v, v2, o [BH, NT, C, V]."""
    i_v, chunk = tl.program_id(0), tl.program_id(1)
    o_c = tl.arange(0, C)
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    ck_off = chunk * C * K + o_c[:, None] * K + o_k[None, :]
    cc_off = chunk * C * C + o_c[:, None] * C + o_c[None, :]
    cv_off = chunk * C * V + o_c[:, None] * V + o_v[None, :]
    b_qg = tl.load(q + ck_off, mask=m_k[None, :], other=0.0) * tl.exp(
        tl.load(G + ck_off, mask=m_k[None, :], other=0.0)
    )
    b_s = tl.load(states + chunk * K * V + o_k[:, None] * V + o_v[None, :], mask=m_k[:, None] & m_v[None, :],
                  other=0.0)
    b_o = tl.dot(b_qg, b_s, input_precision=DOT_PREC)
    b_o += tl.dot(
        tl.load(A_qk + cc_off), tl.load(v + cv_off, mask=m_v[None, :], other=0.0), input_precision=DOT_PREC
    )
    b_o += tl.dot(tl.load(A_qb + cc_off), tl.load(v2 + cv_off, mask=m_v[None, :], other=0.0),
                  input_precision=DOT_PREC)
    tl.store(o + cv_off, scale * b_o, mask=m_v[None, :])


@triton.jit
def dplr_output_bwd_kernel(q, G, A_qk, A_qb, do, dv2_out, ds_out, dv_out, scale, K: tl.constexpr,
                           V: tl.constexpr, C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                           DOT_PREC: tl.constexpr):
    """Grid (cdiv(V, BV), BH·NT). do, dv2_out, dv_out [BH, NT, C, V]; ds_out [BH, NT, K, V]."""
    i_v, chunk = tl.program_id(0), tl.program_id(1)
    o_c = tl.arange(0, C)
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    ck_off = chunk * C * K + o_c[:, None] * K + o_k[None, :]
    cc_off = chunk * C * C + o_c[:, None] * C + o_c[None, :]
    cv_off = chunk * C * V + o_c[:, None] * V + o_v[None, :]
    b_do = tl.load(do + cv_off, mask=m_v[None, :], other=0.0) * scale
    b_qg = tl.load(q + ck_off, mask=m_k[None, :], other=0.0) * tl.exp(
        tl.load(G + ck_off, mask=m_k[None, :], other=0.0)
    )
    tl.store(ds_out + chunk * K * V + o_k[:, None] * V + o_v[None, :],
             tl.dot(tl.trans(b_qg), b_do, input_precision=DOT_PREC), mask=m_k[:, None] & m_v[None, :])
    tl.store(dv2_out + cv_off, tl.dot(tl.trans(tl.load(A_qb + cc_off)), b_do, input_precision=DOT_PREC),
             mask=m_v[None, :])
    tl.store(dv_out + cv_off, tl.dot(tl.trans(tl.load(A_qk + cc_off)), b_do, input_precision=DOT_PREC),
             mask=m_v[None, :])


@triton.jit
def dplr_local_bwd_kernel(q, k, v, a, b, G, Gx, A_ab, A_ak, states, v2, do, dv2, dh_after, dv_out,
                          dA_ab, dA_ak, dA_qk, dA_qb, dv, dq, dk, da, db, dG, dGx, scale, K: tl.constexpr,
                          V: tl.constexpr, C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                          DOT_PREC: tl.constexpr):
    """Grid (BH·NT,). Reads the forward's inputs and score matrices, the chunk-start states and the
    gradients after each chunk (dh_after) [BH, NT, K, V], v2, do, dv2 (the reverse scan's) and dv_out
    (the output's share of dV) [BH, NT, C, V]. Writes the four score gradients [BH, NT, C, C] (masked to
    each score's triangle), dv, and the direct parts of dq, dk, da, db, dG, dG⁻ [BH, NT, C, K]
    (dG's last row carries the chunk-end terms)."""
    chunk = tl.program_id(0)
    o_c = tl.arange(0, C)
    o_k = tl.arange(0, BK)
    m_k = o_k < K
    ck_off = chunk * C * K + o_c[:, None] * K + o_k[None, :]
    cc_off = chunk * C * C + o_c[:, None] * C + o_c[None, :]
    b_T, b_ak, b_ax = _solve_tiles(A_ab, A_ak, a, Gx, chunk, o_c, ck_off, m_k, C)
    b_g = tl.load(G + ck_off, mask=m_k[None, :], other=0.0)
    g_last = tl.load(G + chunk * C * K + (C - 1) * K + o_k, mask=m_k, other=0.0)
    tail = tl.exp(g_last[None, :] - b_g)
    b_qg = tl.load(q + ck_off, mask=m_k[None, :], other=0.0) * tl.exp(b_g)
    b_kd = tl.load(k + ck_off, mask=m_k[None, :], other=0.0) * tail
    b_bd = tl.load(b + ck_off, mask=m_k[None, :], other=0.0) * tail
    b_drw = tl.zeros([C, BK], dtype=tl.float32)  # d(a ⊙ e^{G⁻})
    b_dqg = tl.zeros([C, BK], dtype=tl.float32)
    b_dkd = tl.zeros([C, BK], dtype=tl.float32)
    b_dbd = tl.zeros([C, BK], dtype=tl.float32)
    b_d_decay = tl.zeros([BK], dtype=tl.float32)
    b_dqk = tl.zeros([C, C], dtype=tl.float32)
    b_dqb = tl.zeros([C, C], dtype=tl.float32)
    b_dak = tl.zeros([C, C], dtype=tl.float32)
    b_dab = tl.zeros([C, C], dtype=tl.float32)
    for i_v in range(0, V, BV):
        o_v = i_v + tl.arange(0, BV)
        m_v = o_v < V
        cv_off = chunk * C * V + o_c[:, None] * V + o_v[None, :]
        kv_off = chunk * K * V + o_k[:, None] * V + o_v[None, :]
        m_kv = m_k[:, None] & m_v[None, :]
        b_v = tl.load(v + cv_off, mask=m_v[None, :], other=0.0)
        b_v2 = tl.load(v2 + cv_off, mask=m_v[None, :], other=0.0)
        b_do = tl.load(do + cv_off, mask=m_v[None, :], other=0.0)
        b_dv2 = tl.load(dv2 + cv_off, mask=m_v[None, :], other=0.0)
        b_s = tl.load(states + kv_off, mask=m_kv, other=0.0)
        b_dh = tl.load(dh_after + kv_off, mask=m_kv, other=0.0)
        b_dqg += tl.dot(b_do, tl.trans(b_s), input_precision=DOT_PREC)
        b_dkd += tl.dot(b_v, tl.trans(b_dh), input_precision=DOT_PREC)
        b_dbd += tl.dot(b_v2, tl.trans(b_dh), input_precision=DOT_PREC)
        b_d_decay += tl.sum(b_dh * b_s, 1)
        b_dqk += tl.dot(b_do, tl.trans(b_v), input_precision=DOT_PREC)
        b_dqb += tl.dot(b_do, tl.trans(b_v2), input_precision=DOT_PREC)
        # dw = dv₂ S₀ᵀ and du = dv₂ with v₂ = u + w S₀: through the solve, Y = Tᵀ dv₂ gives
        # d(A_ak V) = Y, d(a ⊙ e^{G⁻}) = Y S₀ᵀ and dA_ab = strictly-lower(Y v₂ᵀ)
        b_dru = tl.dot(tl.trans(b_T), b_dv2, input_precision=DOT_PREC)
        b_drw += tl.dot(b_dru, tl.trans(b_s), input_precision=DOT_PREC)
        b_dab += tl.dot(b_dru, tl.trans(b_v2), input_precision=DOT_PREC)
        b_dak += tl.dot(b_dru, tl.trans(b_v), input_precision=DOT_PREC)
        b_dv = (
            tl.load(dv_out + cv_off, mask=m_v[None, :], other=0.0)
            + tl.dot(b_kd, b_dh, input_precision=DOT_PREC)
            + tl.dot(tl.trans(b_ak), b_dru, input_precision=DOT_PREC)
        )
        tl.store(dv + cv_off, b_dv, mask=m_v[None, :])
    strict = o_c[:, None] > o_c[None, :]
    causal = o_c[:, None] >= o_c[None, :]
    tl.store(dA_ab + cc_off, tl.where(strict, b_dab, 0.0))
    tl.store(dA_ak + cc_off, tl.where(strict, b_dak, 0.0))
    tl.store(dA_qk + cc_off, tl.where(causal, scale * b_dqk, 0.0))
    tl.store(dA_qb + cc_off, tl.where(causal, scale * b_dqb, 0.0))
    b_dqg *= scale
    tl.store(dq + ck_off, b_dqg * tl.exp(b_g), mask=m_k[None, :])
    tl.store(dk + ck_off, b_dkd * tail, mask=m_k[None, :])
    tl.store(db + ck_off, b_dbd * tail, mask=m_k[None, :])
    tl.store(
        da + ck_off, b_drw * tl.exp(tl.load(Gx + ck_off, mask=m_k[None, :], other=0.0)), mask=m_k[None, :]
    )
    tl.store(dGx + ck_off, b_drw * b_ax, mask=m_k[None, :])
    # G enters q ⊙ e^G, and G_C − G the decayed keys; G_C also the chunk decay e^{G_C}
    b_tails = b_dkd * b_kd + b_dbd * b_bd
    b_dg = b_dqg * b_qg - b_tails
    last = tl.sum(b_tails, 0) + b_d_decay * tl.exp(g_last)
    b_dg += tl.where(o_c[:, None] == C - 1, last[None, :], 0.0)
    tl.store(dG + ck_off, b_dg, mask=m_k[None, :])
