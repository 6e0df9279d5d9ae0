"""Triton forward kernels of chunked log-linear attention (Mamba-2 form).

With chunks of C = 2^LOG_C tokens, query t of chunk n sees its own chunk through levels 0 … LOG_C (the
intra-chunk hierarchical mask) and earlier chunks through chunk levels j ≥ 0 (level LOG_C + 1 + j): when
bit j of n is set, the aligned block of 2^j chunks just before the chunk ``(n >> j) << j`` starts.
Block b of chunk level j (chunks b·2^j … (b+1)·2^j − 1) has the state W_j[b] = Σ_c e^{G_end − G_c} k_c v_cᵀ
over its keys, decayed to its end; query t reads it decayed to its own position:

    o_t = scale [ Σ_{c in chunk, c ≤ t} (q_t·k_c) e^{γ_t − γ_c} λ_t[ℓ(t, c)] v_c
                  + Σ_{j: bit j of n} λ_t[LOG_C + 1 + j] e^{γ_t + Gs_n − Gs_m} q_t W_j[(n >> j) − 1] ]

with m = (n >> j) << j the first chunk after the block.

γ is the cumulative log-decay inside the chunk and Gs_n the one before chunk n (every exponent ≤ 0).
The block states of all levels lie in one buffer ``W [B, H, NW, K, V]``, level j at offset
Σ_{i<j} (NT >> i); level 0 is the chunks' own states (``chunk_state_kernel``), the levels above are
built from them in PyTorch (:mod:`recall_lm.kernels.log_linear.triton_autograd`).

Layouts (contiguous): q, k ``[B, T, H, K]``; v, o ``[B, T, H, V]``; gam (γ, fp32) ``[B, T, H]``;
lam ``[B, T, H, L]``; Gs fp32 ``[B, H, NT]``; chunk states ``[B, H, NT, K, V]`` fp32.
"""
from __future__ import annotations

import triton
import triton.language as tl

from recall_lm.kernels.gla.triton_common import DOT_PRECISION, autotune_configs

DOT = tl.constexpr(DOT_PRECISION)  # tl.dot's fp32 precision (ieee under the interpreter, tf32 on GPU)


@triton.jit
def chunk_tile(x, i_b, i_h, i_c, T, H: tl.constexpr, D: tl.constexpr, C: tl.constexpr, BD: tl.constexpr,
               col0):
    """``[C, BD]`` fp32 rows of chunk i_c of x ``[B, T, H, D]``, columns col0 … col0 + BD (zero past T, D)."""
    rows = i_c * C + tl.arange(0, C)
    cols = col0 + tl.arange(0, BD)
    offs = ((i_b * T + rows).to(tl.int64) * H + i_h)[:, None] * D + cols[None, :]  # int64: no overflow
    mask = (rows < T)[:, None] & (cols < D)[None, :]
    return tl.load(x + offs, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def chunk_levels(C: tl.constexpr, LOG_C: tl.constexpr):
    """``[C, C]`` int32: ℓ(t, c) = bit_length(t XOR c) inside an aligned chunk, and the causal mask."""
    t = tl.arange(0, C)[:, None]
    c = tl.arange(0, C)[None, :]
    x = t ^ c
    level = tl.zeros([C, C], dtype=tl.int32)
    for b in tl.static_range(LOG_C):
        level += ((x >> b) > 0).to(tl.int32)
    return level, c <= t


@triton.jit
def lam_column(lam, i_b, i_h, i_c, T, col, H: tl.constexpr, L: tl.constexpr, C: tl.constexpr):
    """``[C]`` fp32: λ_t[col] of the chunk's rows (0 past T)."""
    rows = i_c * C + tl.arange(0, C)
    offs = ((i_b * T + rows).to(tl.int64) * H + i_h) * L + col
    return tl.load(lam + offs, mask=rows < T, other=0.0).to(tl.float32)


@triton.jit
def level_weights(lam, i_b, i_h, i_c, T, level, H: tl.constexpr, L: tl.constexpr, C: tl.constexpr,
                  LOG_C: tl.constexpr):
    """``[C, C]`` fp32: λ_t[ℓ(t, c)] for the intra-chunk levels 0 … LOG_C (0 for levels L lacks)."""
    rows = i_c * C + tl.arange(0, C)
    base = ((i_b * T + rows).to(tl.int64) * H + i_h) * L
    weight = tl.zeros([C, C], dtype=tl.float32)
    for lv in tl.static_range(LOG_C + 1):
        col = tl.load(lam + base + lv, mask=(rows < T) & (lv < L), other=0.0).to(tl.float32)
        weight = tl.where(level == lv, col[:, None], weight)
    return weight


@triton.jit
def chunk_gates(gam, Gs, i_b, i_h, i_c, T, NT, H: tl.constexpr, C: tl.constexpr):
    """γ of the chunk's rows ``[C]`` (0 past T), γ at its last real row, and Gs_n."""
    rows = i_c * C + tl.arange(0, C)
    b_gam = tl.load(gam + (i_b * T + rows).to(tl.int64) * H + i_h, mask=rows < T, other=0.0)
    last_row = tl.minimum(i_c * C + C, T) - 1
    g_last = tl.load(gam + (i_b * T + last_row).to(tl.int64) * H + i_h)
    gs = tl.load(Gs + (i_b * H + i_h) * NT + i_c)
    return b_gam, g_last, gs


@triton.autotune(configs=autotune_configs(), key=["C", "BK", "BV"])
@triton.jit
def chunk_state_kernel(k, v, gam, Gs, U, T, NT, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
                       C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr):
    """Grid (cdiv(V, BV), NT, B*H): ``U_n = Σ_c (k_c e^{γ_last − γ_c})ᵀ v_c`` ``[K, V]`` of chunk n."""
    i_v, i_c, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    b_k = chunk_tile(k, i_b, i_h, i_c, T, H, K, C, BK, 0)
    b_v = chunk_tile(v, i_b, i_h, i_c, T, H, V, C, BV, i_v * BV)
    b_gam, g_last, _ = chunk_gates(gam, Gs, i_b, i_h, i_c, T, NT, H, C)
    b_k = b_k * tl.exp(g_last - b_gam)[:, None]
    b_U = tl.dot(tl.trans(b_k), b_v, input_precision=DOT)
    o_k, o_v = tl.arange(0, BK), i_v * BV + tl.arange(0, BV)
    offs = ((i_bh * NT + i_c).to(tl.int64) * K + o_k[:, None]) * V + o_v[None, :]
    tl.store(U + offs, b_U, mask=(o_k < K)[:, None] & (o_v < V)[None, :])


@triton.jit
def block_state_offset(W, i_bh, i_c, j, NT, NW, K: tl.constexpr, V: tl.constexpr):
    """Pointer to W_j[(i_c >> j) − 1] in the level-stacked buffer ``[B*H, NW, K, V]``."""
    level_start = 0
    for i in range(j):
        level_start += NT >> i
    return W + (i_bh * NW + level_start + (i_c >> j) - 1).to(tl.int64) * K * V


@triton.autotune(configs=autotune_configs(), key=["C", "BK", "BV", "L"])
@triton.jit
def output_kernel(q, k, v, gam, lam, Gs, W, o, scale, T, NT, NW, J, H: tl.constexpr, K: tl.constexpr,
                  V: tl.constexpr, L: tl.constexpr, C: tl.constexpr, LOG_C: tl.constexpr, BK: tl.constexpr,
                  BV: tl.constexpr):
    """Grid (cdiv(V, BV), NT, B*H): o of chunk n, its own chunk through the hierarchical mask and the J
    chunk levels through the block states ``W``."""
    i_v, i_c, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    b_q = chunk_tile(q, i_b, i_h, i_c, T, H, K, C, BK, 0)
    b_k = chunk_tile(k, i_b, i_h, i_c, T, H, K, C, BK, 0)
    b_v = chunk_tile(v, i_b, i_h, i_c, T, H, V, C, BV, i_v * BV)
    b_gam, _, gs = chunk_gates(gam, Gs, i_b, i_h, i_c, T, NT, H, C)
    level, causal = chunk_levels(C, LOG_C)
    weight = level_weights(lam, i_b, i_h, i_c, T, level, H, L, C, LOG_C)
    decay = tl.exp(tl.where(causal, b_gam[:, None] - b_gam[None, :], float("-inf")))
    scores = tl.dot(b_q, tl.trans(b_k), input_precision=DOT) * decay * weight
    b_o = tl.dot(scores, b_v, input_precision=DOT)
    rows = i_c * C + tl.arange(0, C)
    o_k, o_v = tl.arange(0, BK), i_v * BV + tl.arange(0, BV)
    state_mask = (o_k < K)[:, None] & (o_v < V)[None, :]
    q_decayed = b_q * tl.exp(b_gam)[:, None]
    for j in range(J):
        if (i_c >> j) & 1:
            start = (i_c >> j) << j
            fac = tl.exp(gs - tl.load(Gs + i_bh * NT + start))
            lam_j = lam_column(lam, i_b, i_h, i_c, T, LOG_C + 1 + j, H, L, C)
            p_W = block_state_offset(W, i_bh, i_c, j, NT, NW, K, V)
            b_W = tl.load(p_W + o_k[:, None] * V + o_v[None, :], mask=state_mask, other=0.0)
            read = tl.dot(q_decayed, b_W, input_precision=DOT)
            b_o += (lam_j * fac)[:, None] * read
    offs = ((i_b * T + rows).to(tl.int64) * H + i_h)[:, None] * V + o_v[None, :]
    tl.store(o + offs, (scale * b_o).to(o.dtype.element_ty), mask=(rows < T)[:, None] & (o_v < V)[None, :])
