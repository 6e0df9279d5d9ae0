"""Triton kernels for the chunk-local parts of the chunked gated delta rule (everything but the scans).

All work on the chunked fp32 layout of :mod:`recall_lm.kernels.delta.chunked_torch` (``[BH, NT, C, *]``
contiguous, chunk ``c`` of sequence-head ``bh`` at flat index ``bh·NT + c``), one program per chunk (and
value block where the value width is tiled). Per chunk, with γ = cumsum(g) and Γ_ij = e^{γ_i − γ_j}:

* ``local_fwd``: A = strictly-lower(diag(β)(K Kᵀ ⊙ Γ)), T = (I + A)⁻¹ by forward substitution on the
  whole C × C tile in registers (one row per step: rows of T only mix rows above them, so no
  cancellation between large terms), W = T diag(β e^γ) K, U = T diag(β) V, Kd = K ⊙ e^{γ_C − γ},
  decay = e^{γ_C}.
* ``output``: O = scale [(Q ⊙ e^γ) S₀ + tril(Q Kᵀ ⊙ Γ) V_new] from the scan's chunk states and V_new.
* ``output_bwd``: the output's share of the scan gradients, dV⁰ = scale Pᵀ dO and dS⁰ = scale (Q ⊙ e^γ)ᵀ dO.
* ``local_bwd``: given the reverse scan's dV_new and the gradient after each chunk, the gradients of
  q, k, v, β and g, recomputing A and T (nothing chunk-local is stored by the forward); with
  Y = Tᵀ dV_new the solve's gradients need neither W nor U.

Decays enter only as exponentials of non-positive differences, so nothing overflows at any length.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _unit_lower_inverse(A, o_c, C: tl.constexpr):
    """(I + A)⁻¹ for a strictly lower [C, C] tile A: row i of T is e_i − Σ_{j<i} A_ij T_j."""
    T = tl.zeros([C, C], dtype=tl.float32)
    for i in range(C):
        row_sel = o_c[:, None] == i
        a_i = tl.sum(tl.where(row_sel, A, 0.0), 0)  # A[i, :] indexed by j
        t_i = (o_c == i).to(tl.float32) - tl.sum(a_i[:, None] * T, 0)
        T = tl.where(row_sel, t_i[None, :], T)
    return T


@triton.jit
def _chunk_gates(g, chunk, o_c, C: tl.constexpr, HAS_G: tl.constexpr):
    """(γ [C], γ_C): the chunk-local inclusive cumsum of g and its last value (zeros without g)."""
    if HAS_G:
        b_g = tl.load(g + chunk * C + o_c)
        return tl.cumsum(b_g, 0), tl.sum(b_g, 0)
    else:
        return tl.zeros([C], dtype=tl.float32), 0.0


@triton.jit
def _decay_matrix(G, o_c, INCLUSIVE: tl.constexpr):
    """Γ_ij = e^{γ_i − γ_j} on the lower triangle (diagonal included if INCLUSIVE), 0 elsewhere."""
    if INCLUSIVE:
        keep = o_c[:, None] >= o_c[None, :]
    else:
        keep = o_c[:, None] > o_c[None, :]
    return tl.exp(tl.where(keep, G[:, None] - G[None, :], float("-inf")))


@triton.jit
def delta_local_fwd_kernel(k, v, beta, g, w, u, kd, decay, K: tl.constexpr, V: tl.constexpr, C: tl.constexpr,
                           BK: tl.constexpr, BV: tl.constexpr, HAS_G: tl.constexpr, DOT_PREC: tl.constexpr):
    """Grid (BH·NT,). k, w, kd [BH, NT, C, K]; v, u [BH, NT, C, V]; beta, g [BH, NT, C]; decay [BH, NT]."""
    chunk = tl.program_id(0)
    o_c = tl.arange(0, C)
    o_k = tl.arange(0, BK)
    m_k = o_k < K
    ck_off = chunk * C * K + o_c[:, None] * K + o_k[None, :]
    b_k = tl.load(k + ck_off, mask=m_k[None, :], other=0.0)
    b_beta = tl.load(beta + chunk * C + o_c)
    G, G_last = _chunk_gates(g, chunk, o_c, C, HAS_G)
    b_A = (
        tl.dot(b_k, tl.trans(b_k), input_precision=DOT_PREC) * b_beta[:, None] * _decay_matrix(G, o_c, False)
    )
    b_T = _unit_lower_inverse(b_A, o_c, C)
    b_w = tl.dot(b_T, b_k * (b_beta * tl.exp(G))[:, None], input_precision=DOT_PREC)
    tl.store(w + ck_off, b_w, mask=m_k[None, :])
    tl.store(kd + ck_off, b_k * tl.exp(G_last - G)[:, None], mask=m_k[None, :])
    if HAS_G:
        tl.store(decay + chunk, tl.exp(G_last))
    for i_v in range(0, V, BV):
        o_v = i_v + tl.arange(0, BV)
        cv_off = chunk * C * V + o_c[:, None] * V + o_v[None, :]
        b_v = tl.load(v + cv_off, mask=(o_v < V)[None, :], other=0.0)
        b_u = tl.dot(b_T, b_v * b_beta[:, None], input_precision=DOT_PREC)
        tl.store(u + cv_off, b_u, mask=(o_v < V)[None, :])


@triton.jit
def _queries_and_scores(q, k, g, chunk, o_c, o_k, K: tl.constexpr, C: tl.constexpr, HAS_G: tl.constexpr,
                        DOT_PREC: tl.constexpr):
    """(Q ⊙ e^γ [C, BK], P = tril(Q Kᵀ ⊙ Γ) [C, C]) of one chunk."""
    m_k = o_k < K
    ck_off = chunk * C * K + o_c[:, None] * K + o_k[None, :]
    b_q = tl.load(q + ck_off, mask=m_k[None, :], other=0.0)
    b_k = tl.load(k + ck_off, mask=m_k[None, :], other=0.0)
    G, _ = _chunk_gates(g, chunk, o_c, C, HAS_G)
    b_P = tl.dot(b_q, tl.trans(b_k), input_precision=DOT_PREC) * _decay_matrix(G, o_c, True)
    return b_q * tl.exp(G)[:, None], b_P


@triton.jit
def delta_output_kernel(q, k, g, states, v_new, o, scale, K: tl.constexpr, V: tl.constexpr, C: tl.constexpr,
                        BK: tl.constexpr, BV: tl.constexpr, HAS_G: tl.constexpr, DOT_PREC: tl.constexpr):
    """Grid (cdiv(V, BV), BH·NT). q, k [BH, NT, C, K]; g [BH, NT, C]; states [BH, NT, K, V] (chunk starts);
    v_new, o [BH, NT, C, V]."""
    i_v, chunk = tl.program_id(0), tl.program_id(1)
    o_c = tl.arange(0, C)
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_v = o_v < V
    b_qg, b_P = _queries_and_scores(q, k, g, chunk, o_c, o_k, K, C, HAS_G, DOT_PREC)
    b_s = tl.load(states + chunk * K * V + o_k[:, None] * V + o_v[None, :],
                  mask=(o_k < K)[:, None] & m_v[None, :], other=0.0)
    cv_off = chunk * C * V + o_c[:, None] * V + o_v[None, :]
    b_vn = tl.load(v_new + cv_off, mask=m_v[None, :], other=0.0)
    b_o = tl.dot(b_qg, b_s, input_precision=DOT_PREC) + tl.dot(b_P, b_vn, input_precision=DOT_PREC)
    tl.store(o + cv_off, scale * b_o, mask=m_v[None, :])


@triton.jit
def delta_output_bwd_kernel(q, k, g, do, dv_out, ds_out, scale, K: tl.constexpr, V: tl.constexpr,
                            C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, HAS_G: tl.constexpr,
                            DOT_PREC: tl.constexpr):
    """Grid (cdiv(V, BV), BH·NT). do, dv_out [BH, NT, C, V]; ds_out [BH, NT, K, V]:
    dv_out = scale Pᵀ dO, ds_out = scale (Q ⊙ e^γ)ᵀ dO."""
    i_v, chunk = tl.program_id(0), tl.program_id(1)
    o_c = tl.arange(0, C)
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_v = o_v < V
    b_qg, b_P = _queries_and_scores(q, k, g, chunk, o_c, o_k, K, C, HAS_G, DOT_PREC)
    cv_off = chunk * C * V + o_c[:, None] * V + o_v[None, :]
    b_do = tl.load(do + cv_off, mask=m_v[None, :], other=0.0) * scale
    tl.store(dv_out + cv_off, tl.dot(tl.trans(b_P), b_do, input_precision=DOT_PREC), mask=m_v[None, :])
    tl.store(ds_out + chunk * K * V + o_k[:, None] * V + o_v[None, :],
             tl.dot(tl.trans(b_qg), b_do, input_precision=DOT_PREC), mask=(o_k < K)[:, None] & m_v[None, :])


@triton.jit
def delta_local_bwd_kernel(
    q,
    k,
    v,
    beta,
    g,
    states,
    v_new,
    do,
    dv_new,
    dh_after,
    dq,
    dk,
    dv,
    dbeta,
    dg,
    scale,
    K: tl.constexpr,
    V: tl.constexpr,
    C: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    HAS_G: tl.constexpr,
    DOT_PREC: tl.constexpr,
):
    """Grid (BH·NT,). Inputs as the forward's plus states / dh_after [BH, NT, K, V] (the state at the chunk
    start / the gradient of the state at its end) and v_new, do, dv_new [BH, NT, C, V]; writes dq, dk
    [BH, NT, C, K], dv [BH, NT, C, V], dbeta, dg [BH, NT, C]."""
    chunk = tl.program_id(0)
    o_c = tl.arange(0, C)
    o_k = tl.arange(0, BK)
    m_k = o_k < K
    ck_off = chunk * C * K + o_c[:, None] * K + o_k[None, :]
    b_q = tl.load(q + ck_off, mask=m_k[None, :], other=0.0)
    b_k = tl.load(k + ck_off, mask=m_k[None, :], other=0.0)
    b_beta = tl.load(beta + chunk * C + o_c)
    G, G_last = _chunk_gates(g, chunk, o_c, C, HAS_G)
    e_G = tl.exp(G)
    e_tail = tl.exp(G_last - G)
    # recompute the forward's A and T (W and U are not needed: see below)
    b_kk = tl.dot(b_k, tl.trans(b_k), input_precision=DOT_PREC)
    gamma_strict = _decay_matrix(G, o_c, False)
    gamma_causal = _decay_matrix(G, o_c, True)
    b_A = b_kk * b_beta[:, None] * gamma_strict
    b_T = _unit_lower_inverse(b_A, o_c, C)
    b_P = tl.dot(b_q, tl.trans(b_k), input_precision=DOT_PREC) * gamma_causal
    # With Y = Tᵀ dV_new, dW = −dV_new S₀ᵀ, dU = dV_new and U − W S₀ = V_new, the solve's gradients
    # are d(diag(β) V) = Y, d(diag(β e^γ) K) = −Y S₀ᵀ and dA = −strictly-lower(Y V_newᵀ), summed over
    # the value blocks.
    b_drw = tl.zeros([C, BK], dtype=tl.float32)
    b_dqg = tl.zeros([C, BK], dtype=tl.float32)
    b_dkd = tl.zeros([C, BK], dtype=tl.float32)
    b_dP = tl.zeros([C, C], dtype=tl.float32)
    b_yv = tl.zeros([C, C], dtype=tl.float32)  # Y V_newᵀ
    b_dbeta = tl.zeros([C], dtype=tl.float32)
    d_decay = 0.0
    for i_v in range(0, V, BV):
        o_v = i_v + tl.arange(0, BV)
        m_v = o_v < V
        cv_off = chunk * C * V + o_c[:, None] * V + o_v[None, :]
        kv_off = chunk * K * V + o_k[:, None] * V + o_v[None, :]
        m_kv = m_k[:, None] & m_v[None, :]
        b_v = tl.load(v + cv_off, mask=m_v[None, :], other=0.0)
        b_vn = tl.load(v_new + cv_off, mask=m_v[None, :], other=0.0)
        b_do = tl.load(do + cv_off, mask=m_v[None, :], other=0.0)
        b_dvn = tl.load(dv_new + cv_off, mask=m_v[None, :], other=0.0)
        b_s = tl.load(states + kv_off, mask=m_kv, other=0.0)
        b_dh = tl.load(dh_after + kv_off, mask=m_kv, other=0.0)
        b_y = tl.dot(tl.trans(b_T), b_dvn, input_precision=DOT_PREC)  # d(diag(β) V)
        b_drw -= tl.dot(b_y, tl.trans(b_s), input_precision=DOT_PREC)
        b_yv += tl.dot(b_y, tl.trans(b_vn), input_precision=DOT_PREC)
        b_dqg += tl.dot(b_do, tl.trans(b_s), input_precision=DOT_PREC)
        b_dP += tl.dot(b_do, tl.trans(b_vn), input_precision=DOT_PREC)
        b_dkd += tl.dot(b_vn, tl.trans(b_dh), input_precision=DOT_PREC)
        d_decay += tl.sum(tl.sum(b_dh * b_s, 1), 0)
        tl.store(dv + cv_off, b_y * b_beta[:, None], mask=m_v[None, :])
        b_dbeta += tl.sum(b_y * b_v, 1)
    b_dqg *= scale
    b_dP *= scale
    b_dA = -tl.where(o_c[:, None] > o_c[None, :], b_yv, 0.0)
    # A = diag(β)(K Kᵀ ⊙ Γ) and P = Q Kᵀ ⊙ Γ
    b_dkk = b_dA * b_beta[:, None] * gamma_strict
    b_dbeta += tl.sum(b_dA * b_kk * gamma_strict, 1)
    b_dscore = b_dP * gamma_causal
    b_dq = tl.dot(b_dscore, b_k, input_precision=DOT_PREC) + b_dqg * e_G[:, None]
    b_dk = (tl.dot(b_dkk + tl.trans(b_dkk), b_k, input_precision=DOT_PREC)
            + tl.dot(tl.trans(b_dscore), b_q, input_precision=DOT_PREC)
            + b_drw * (b_beta * e_G)[:, None] + b_dkd * e_tail[:, None])
    t_w = tl.sum(b_drw * b_k, 1)  # d(β_i e^{γ_i}) / (e^{γ_i} or β_i)
    b_dbeta += t_w * e_G
    tl.store(dq + ck_off, b_dq, mask=m_k[None, :])
    tl.store(dk + ck_off, b_dk, mask=m_k[None, :])
    tl.store(dbeta + chunk * C + o_c, b_dbeta)
    if HAS_G:
        # dγ_i from every place γ enters, then dg = the reverse cumsum of dγ (γ = cumsum g)
        b_E = b_dA * b_A + b_dP * b_P  # ∂/∂(γ_i − γ_j) of the two decayed score matrices
        s_kd = tl.sum(b_dkd * b_k * e_tail[:, None], 1)
        b_dG = (tl.sum(b_E, 1) - tl.sum(b_E, 0) + t_w * b_beta * e_G
                + tl.sum(b_dqg * b_q, 1) * e_G - s_kd)
        d_last = tl.sum(s_kd, 0) + d_decay * tl.exp(G_last)  # γ_C enters Kd and the chunk decay
        b_dG += tl.where(o_c == C - 1, d_last, 0.0)
        tl.store(dg + chunk * C + o_c, tl.sum(b_dG, 0) - tl.cumsum(b_dG, 0) + b_dG)


# Launch settings, shared with the ahead-of-time compile test (tests/kernels/test_delta_aot.py).
LAUNCH = dict(num_warps=4, num_stages=2)
BWD_LAUNCH = dict(num_warps=8, num_stages=1)  # local_bwd holds ~10 [C, K] tiles: more warps, no pipelining


def local_bwd_block_v(BK: int, BV: int) -> int:
    """The value block of ``local_bwd``: at most 32 for the widest keys, so its tiles fit the A100's shared
    memory (139 KB at K = V = 128 with BV = 32, 197 KB with BV = 64)."""
    return min(BV, 32) if BK > 64 else BV
