"""Triton backward kernels of chunked log-linear attention (the forward: ``triton_forward``).

With ``do`` already multiplied by ``scale``, P_tc = (q_t·k_c) e^{γ_t − γ_c} λ_t[ℓ(t, c)] the intra-chunk
weights and dP = do vᵀ:

    intra:  dv += Pᵀ do,  dq += (dP ⊙ e^{γ_t − γ_c} λ) k,  dk += (dP ⊙ e^{γ_t − γ_c} λ)ᵀ q,
            dλ_t[ℓ] = Σ_{c at level ℓ} dP_tc (q_t·k_c) e^{γ_t − γ_c}
    reads:  with a_tj = λ_t[LOG_C + 1 + j] e^{γ_t} e^{Gs_n − Gs_{(n >> j) << j}} and W = W_j[(n >> j) − 1]:
            dq_t += a_tj do_t Wᵀ,  dλ_t[LOG_C + 1 + j] = a_tj / λ · do_t·(q_t W),  D_j(n) = Σ_t a_tj q_tᵀ do_t
    states: the block-state gradients dW (summed from D and pushed down the level tree in PyTorch) give
            each chunk's own state gradient dU, and dk_c += e^{γ_last − γ_c} v_c dUᵀ,
            dv_c += e^{γ_last − γ_c} k_c dU.

The decays' gradient is not taken here: o is a function of q_t e^{G_t} and k_c e^{−G_c} only, so
dG_t = q_t·dq_t − k_t·dk_t (``triton_autograd``).
"""
from __future__ import annotations

import triton
import triton.language as tl

from recall_lm.kernels.gla.triton_common import autotune_configs
from recall_lm.kernels.log_linear.triton_forward import (
    DOT,
    block_state_offset,
    chunk_gates,
    chunk_levels,
    chunk_tile,
    lam_column,
    level_weights,
)


@triton.autotune(configs=autotune_configs(), key=["C", "BK", "BV", "L"])
@triton.jit
def read_grad_kernel(q, do, gam, lam, Gs, D, T, NT, J, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
                     L: tl.constexpr, C: tl.constexpr, LOG_C: tl.constexpr, BK: tl.constexpr,
                     BV: tl.constexpr):
    """Grid (cdiv(V, BV), NT, B*H): ``D_j(n) = Σ_t a_tj q_tᵀ do_t`` ``[K, V]`` for every chunk level j whose
    bit n has, into ``D [B, H, NT, J, K, V]`` (zero-filled: the others stay 0)."""
    i_v, i_c, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    b_q = chunk_tile(q, i_b, i_h, i_c, T, H, K, C, BK, 0)
    b_do = chunk_tile(do, i_b, i_h, i_c, T, H, V, C, BV, i_v * BV)
    b_gam, _, gs = chunk_gates(gam, Gs, i_b, i_h, i_c, T, NT, H, C)
    q_decayed = b_q * tl.exp(b_gam)[:, None]
    o_k, o_v = tl.arange(0, BK), i_v * BV + tl.arange(0, BV)
    state_mask = (o_k < K)[:, None] & (o_v < V)[None, :]
    for j in range(J):
        if (i_c >> j) & 1:
            fac = tl.exp(gs - tl.load(Gs + i_bh * NT + ((i_c >> j) << j)))
            lam_j = lam_column(lam, i_b, i_h, i_c, T, LOG_C + 1 + j, H, L, C)
            b_D = tl.dot(tl.trans(q_decayed * (lam_j * fac)[:, None]), b_do,
                         input_precision=DOT)
            p_D = D + ((i_bh * NT + i_c) * J + j).to(tl.int64) * K * V
            tl.store(p_D + o_k[:, None] * V + o_v[None, :], b_D, mask=state_mask)


@triton.jit
def intra_scores(q, k, v, do, gam, lam, Gs, i_b, i_h, i_c, T, NT, H: tl.constexpr, K: tl.constexpr,
                 V: tl.constexpr, L: tl.constexpr, C: tl.constexpr, LOG_C: tl.constexpr, BK: tl.constexpr,
                 BV: tl.constexpr):
    """The chunk's q, k ``[C, BK]``, γ, Gs_n, level table, the decayed scores A ⊙ e^{γ_t − γ_c} (causal), λ's
    weights and dP = do vᵀ ``[C, C]`` (summed over the V blocks)."""
    b_q = chunk_tile(q, i_b, i_h, i_c, T, H, K, C, BK, 0)
    b_k = chunk_tile(k, i_b, i_h, i_c, T, H, K, C, BK, 0)
    b_gam, g_last, gs = chunk_gates(gam, Gs, i_b, i_h, i_c, T, NT, H, C)
    level, causal = chunk_levels(C, LOG_C)
    weight = level_weights(lam, i_b, i_h, i_c, T, level, H, L, C, LOG_C)
    decay = tl.exp(tl.where(causal, b_gam[:, None] - b_gam[None, :], float("-inf")))
    scores = tl.dot(b_q, tl.trans(b_k), input_precision=DOT) * decay
    dP = tl.zeros([C, C], dtype=tl.float32)
    for i_v in range(tl.cdiv(V, BV)):
        b_do = chunk_tile(do, i_b, i_h, i_c, T, H, V, C, BV, i_v * BV)
        b_v = chunk_tile(v, i_b, i_h, i_c, T, H, V, C, BV, i_v * BV)
        dP += tl.dot(b_do, tl.trans(b_v), input_precision=DOT)
    return b_q, b_k, b_gam, g_last, gs, level, causal, decay, scores, weight, dP


@triton.autotune(configs=autotune_configs(), key=["C", "BK", "BV", "L"])
@triton.jit
def dq_dlam_kernel(q, k, v, do, gam, lam, Gs, W, dq, dlam, T, NT, NW, J, H: tl.constexpr, K: tl.constexpr,
                   V: tl.constexpr, L: tl.constexpr, C: tl.constexpr, LOG_C: tl.constexpr, BK: tl.constexpr,
                   BV: tl.constexpr):
    """Grid (NT, B*H): dq ``[B, T, H, K]`` fp32 and dλ ``[B, T, H, L]`` fp32 (zero-filled) of chunk n."""
    i_c, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    b_q, b_k, b_gam, _, gs, level, causal, decay, scores, weight, dP = intra_scores(
        q, k, v, do, gam, lam, Gs, i_b, i_h, i_c, T, NT, H, K, V, L, C, LOG_C, BK, BV)
    b_dq = tl.dot(dP * decay * weight, b_k, input_precision=DOT)
    rows = i_c * C + tl.arange(0, C)
    lam_row = ((i_b * T + rows).to(tl.int64) * H + i_h) * L
    per_level = tl.where(causal, dP * scores, 0.0)
    for lv in tl.static_range(LOG_C + 1):
        d_lv = tl.sum(tl.where(level == lv, per_level, 0.0), axis=1)
        tl.store(dlam + lam_row + lv, d_lv, mask=(rows < T) & (lv < L))
    q_decayed = b_q * tl.exp(b_gam)[:, None]
    o_k = tl.arange(0, BK)
    for j in range(J):
        if (i_c >> j) & 1:
            fac = tl.exp(gs - tl.load(Gs + i_bh * NT + ((i_c >> j) << j)))
            lam_j = lam_column(lam, i_b, i_h, i_c, T, LOG_C + 1 + j, H, L, C)
            p_W = block_state_offset(W, i_bh, i_c, j, NT, NW, K, V)
            d_read = tl.zeros([C], dtype=tl.float32)
            dq_read = tl.zeros([C, BK], dtype=tl.float32)
            for i_v in range(tl.cdiv(V, BV)):
                o_v = i_v * BV + tl.arange(0, BV)
                b_W = tl.load(p_W + o_k[:, None] * V + o_v[None, :],
                              mask=(o_k < K)[:, None] & (o_v < V)[None, :], other=0.0)
                b_do = chunk_tile(do, i_b, i_h, i_c, T, H, V, C, BV, i_v * BV)
                d_read += tl.sum(b_do * tl.dot(q_decayed, b_W, input_precision=DOT), axis=1)
                dq_read += tl.dot(b_do, tl.trans(b_W), input_precision=DOT)
            b_dq += (lam_j * fac * tl.exp(b_gam))[:, None] * dq_read
            tl.store(dlam + lam_row + LOG_C + 1 + j, d_read * fac, mask=rows < T)
    offs = ((i_b * T + rows).to(tl.int64) * H + i_h)[:, None] * K + o_k[None, :]
    tl.store(dq + offs, b_dq, mask=(rows < T)[:, None] & (o_k < K)[None, :])


@triton.autotune(configs=autotune_configs(), key=["C", "BK", "BV", "L"])
@triton.jit
def dk_dv_kernel(q, k, v, do, gam, lam, Gs, dU, dk, dv, T, NT, H: tl.constexpr, K: tl.constexpr,
                 V: tl.constexpr, L: tl.constexpr, C: tl.constexpr, LOG_C: tl.constexpr, BK: tl.constexpr,
                 BV: tl.constexpr):
    """Grid (NT, B*H): dk ``[B, T, H, K]`` and dv ``[B, T, H, V]`` fp32 of chunk n, from the intra-chunk
    weights and the chunk state's gradient dU ``[B, H, NT, K, V]``."""
    i_c, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    b_q, b_k, b_gam, g_last, _, _, causal, decay, scores, weight, dP = intra_scores(
        q, k, v, do, gam, lam, Gs, i_b, i_h, i_c, T, NT, H, K, V, L, C, LOG_C, BK, BV)
    b_dk = tl.dot(tl.trans(dP * decay * weight), b_q, input_precision=DOT)
    P = tl.where(causal, scores * weight, 0.0)
    tail = tl.exp(g_last - b_gam)[:, None]  # k_c's weight in its chunk's own state
    rows = i_c * C + tl.arange(0, C)
    o_k = tl.arange(0, BK)
    p_dU = dU + (i_bh * NT + i_c).to(tl.int64) * K * V
    for i_v in range(tl.cdiv(V, BV)):
        o_v = i_v * BV + tl.arange(0, BV)
        b_dU = tl.load(p_dU + o_k[:, None] * V + o_v[None, :], mask=(o_k < K)[:, None] & (o_v < V)[None, :],
                       other=0.0)
        b_do = chunk_tile(do, i_b, i_h, i_c, T, H, V, C, BV, i_v * BV)
        b_v = chunk_tile(v, i_b, i_h, i_c, T, H, V, C, BV, i_v * BV)
        b_dv = tl.dot(tl.trans(P), b_do, input_precision=DOT)
        b_dv += tl.dot(b_k * tail, b_dU, input_precision=DOT)
        b_dk += tail * tl.dot(b_v, tl.trans(b_dU), input_precision=DOT)
        offs = ((i_b * T + rows).to(tl.int64) * H + i_h)[:, None] * V + o_v[None, :]
        tl.store(dv + offs, b_dv, mask=(rows < T)[:, None] & (o_v < V)[None, :])
    offs = ((i_b * T + rows).to(tl.int64) * H + i_h)[:, None] * K + o_k[None, :]
    tl.store(dk + offs, b_dk, mask=(rows < T)[:, None] & (o_k < K)[None, :])
