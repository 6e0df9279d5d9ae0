"""Triton forward kernels of chunked gated linear attention.

Split (as in GLA / fla): gate cumsum per chunk -> state passing over chunks (chunk-start states h) ->
intra-chunk score matrix A -> output ``o = scale (q * exp(Gq)) h + A v``. Per chunk, ``G`` is the
inclusive cumsum of g and ``Gq`` the cumsum the queries see (G, or G - g with the bonus ``u``).
Shapes and layouts: see :mod:`recall_lm.kernels.gla.triton_common`.
"""
from __future__ import annotations

import triton
import triton.language as tl

from recall_lm.kernels.gla.triton_common import autotune_configs, chunk_lookup, sequence_bounds


@triton.autotune(configs=autotune_configs(), key=["BT", "BK"])
@triton.jit
def gate_cumsum_kernel(g, G, Gq, T, NT, cu_seqlens, chunk_indices, H: tl.constexpr, GK: tl.constexpr,
                       BT: tl.constexpr, BK: tl.constexpr, STORE_GQ: tl.constexpr, IS_VARLEN: tl.constexpr):
    """Grid (cdiv(GK, BK), chunks, B*H): ``G`` = inclusive cumsum of g inside each chunk; ``Gq = G - g``."""
    i_k, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    bos, seq_len, i_c, _ = chunk_lookup(i_t, i_b, T, NT, cu_seqlens, chunk_indices, IS_VARLEN)
    rows = i_c * BT + tl.arange(0, BT)
    o_k = i_k * BK + tl.arange(0, BK)
    mask = (rows < seq_len)[:, None] & (o_k < GK)[None, :]
    offs = (bos + rows)[:, None] * H * GK + i_h * GK + o_k[None, :]
    b_g = tl.load(g + offs, mask=mask, other=0.0).to(tl.float32)
    b_G = tl.cumsum(b_g, axis=0)
    tl.store(G + offs, b_G, mask=mask)
    if STORE_GQ:
        tl.store(Gq + offs, b_G - b_g, mask=mask)


@triton.autotune(configs=autotune_configs(), key=["BT", "BK", "BV", "HAS_G"])
@triton.jit
def state_fwd_kernel(
    k,
    v,
    G,
    h,
    h0,
    ht,
    T,
    cu_seqlens,
    chunk_offsets,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    HAS_G: tl.constexpr,
    HEAD_G: tl.constexpr,
    USE_H0: tl.constexpr,
    STORE_FINAL: tl.constexpr,
    IS_VARLEN: tl.constexpr,
    DOT_PREC: tl.constexpr,
):
    """Grid (cdiv(K, BK), cdiv(V, BV), N*H). Stores the state at every chunk start into ``h``, then
    ``h <- exp(G_last) * h + (k * exp(G_last - G))^T v``; the final state into ``ht``."""
    i_k, i_v, i_nh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_n, i_h = i_nh // H, i_nh % H
    bos, seq_len = sequence_bounds(i_n, T, cu_seqlens, IS_VARLEN)
    NT = tl.cdiv(seq_len, BT)
    if IS_VARLEN:
        boh = tl.load(chunk_offsets + i_n).to(tl.int32)
    else:
        boh = i_n * NT
    o_t = tl.arange(0, BT)
    o_k = i_k * BK + tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    m_kv = m_k[:, None] & m_v[None, :]
    s_off = i_h * K * V + o_k[:, None] * V + o_v[None, :]
    GK: tl.constexpr = 1 if HEAD_G else K
    g_col = o_k * 0 if HEAD_G else o_k

    b_h = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_H0:
        b_h += tl.load(h0 + i_n * H * K * V + s_off, mask=m_kv, other=0.0).to(tl.float32)
    for i_t in range(NT):
        tl.store(h + (boh + i_t) * H * K * V + s_off, b_h, mask=m_kv)
        rows = i_t * BT + o_t
        m_t = rows < seq_len
        b_kt = tl.load(k + (bos + rows)[None, :] * H * K + i_h * K + o_k[:, None],
                       mask=m_k[:, None] & m_t[None, :], other=0.0).to(tl.float32)
        b_v = tl.load(v + (bos + rows)[:, None] * H * V + i_h * V + o_v[None, :],
                      mask=m_t[:, None] & m_v[None, :], other=0.0).to(tl.float32)
        if HAS_G:
            last = tl.minimum(i_t * BT + BT, seq_len) - 1
            g_last = tl.load(G + (bos + last) * H * GK + i_h * GK + g_col, mask=m_k, other=0.0)
            b_gt = tl.load(G + (bos + rows)[None, :] * H * GK + i_h * GK + g_col[:, None],
                           mask=m_k[:, None] & m_t[None, :], other=0.0)
            b_kt = tl.where(m_t[None, :], b_kt * tl.exp(g_last[:, None] - b_gt), 0.0)
            b_h *= tl.exp(g_last)[:, None]
        b_h += tl.dot(b_kt, b_v, input_precision=DOT_PREC)
    if STORE_FINAL:
        tl.store(ht + i_n * H * K * V + s_off, b_h, mask=m_kv)


@triton.autotune(configs=autotune_configs(), key=["BT", "BK"])
@triton.jit
def scores_fwd_scalar_kernel(q, k, u, G, Gq, A, scale, T, NT, cu_seqlens, chunk_indices, H: tl.constexpr,
                             K: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, HAS_G: tl.constexpr,
                             USE_U: tl.constexpr, IS_VARLEN: tl.constexpr, DOT_PREC: tl.constexpr):
    """Grid (chunks, B*H); no gate or a per-head gate. ``A_ij = scale q_i.k_j exp(Gq_i - G_j)`` for
    j <= i (j < i with u, plus the bonus ``scale q_i.(u*k_i)`` on the diagonal). The mask is applied
    before the exp, so the full chunk is safe for scalar gates."""
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    bos, seq_len, i_c, _ = chunk_lookup(i_t, i_b, T, NT, cu_seqlens, chunk_indices, IS_VARLEN)
    o_t = tl.arange(0, BT)
    rows = i_c * BT + o_t
    m_t = rows < seq_len
    acc = tl.zeros([BT, BT], dtype=tl.float32)
    bonus = tl.zeros([BT], dtype=tl.float32)
    for i_k in range(tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)
        m_k = o_k < K
        b_q = tl.load(q + (bos + rows)[:, None] * H * K + i_h * K + o_k[None, :],
                      mask=m_t[:, None] & m_k[None, :], other=0.0).to(tl.float32)
        b_kt = tl.load(k + (bos + rows)[None, :] * H * K + i_h * K + o_k[:, None],
                       mask=m_k[:, None] & m_t[None, :], other=0.0).to(tl.float32)
        acc += tl.dot(b_q, b_kt, input_precision=DOT_PREC)
        if USE_U:
            b_u = tl.load(u + i_h * K + o_k, mask=m_k, other=0.0).to(tl.float32)
            bonus += tl.sum(b_q * b_u[None, :] * tl.trans(b_kt), 1)
    if USE_U:
        keep = o_t[:, None] > o_t[None, :]
    else:
        keep = o_t[:, None] >= o_t[None, :]
    keep = keep & m_t[:, None] & m_t[None, :]
    if HAS_G:
        b_gq = tl.load(Gq + (bos + rows) * H + i_h, mask=m_t, other=0.0)
        b_g = tl.load(G + (bos + rows) * H + i_h, mask=m_t, other=0.0)
        acc = acc * tl.exp(tl.where(keep, b_gq[:, None] - b_g[None, :], float("-inf")))
    else:
        acc = tl.where(keep, acc, 0.0)
    if USE_U:
        acc += tl.where(o_t[:, None] == o_t[None, :], bonus[:, None], 0.0)
    tl.store(A + (bos + rows)[:, None] * H * BT + i_h * BT + o_t[None, :], acc * scale, mask=m_t[:, None])


@triton.autotune(configs=autotune_configs(), key=["BT", "BK"])
@triton.jit
def scores_fwd_channel_kernel(q, k, u, G, Gq, A, scale, T, NT, cu_seqlens, chunk_indices, H: tl.constexpr,
                              K: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr,
                              USE_U: tl.constexpr, IS_VARLEN: tl.constexpr, DOT_PREC: tl.constexpr):
    """Grid (chunks, NC*NC, B*H) with NC = BT // BC; per-channel gate. One BC x BC block of ``A``.

    Below the diagonal (query sub-chunk i > key sub-chunk j), with r the row just before sub-chunk i:
    ``A = (q * exp(Gq - G_r)) (k * exp(G_r - G))^T``, both exponents <= 0. Diagonal blocks: one key
    column at a time, exact ``exp(Gq_i - G_j)`` with the causal mask applied before the exp."""
    NC: tl.constexpr = BT // BC
    i_t, i_ij, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_i, i_j = i_ij // NC, i_ij % NC
    i_b, i_h = i_bh // H, i_bh % H
    if i_i < i_j:
        return
    bos, seq_len, i_c, _ = chunk_lookup(i_t, i_b, T, NT, cu_seqlens, chunk_indices, IS_VARLEN)
    if i_c * BT + i_i * BC >= seq_len:
        return
    o_c = tl.arange(0, BC)
    rows_i = i_c * BT + i_i * BC + o_c
    rows_j = i_c * BT + i_j * BC + o_c
    m_i = rows_i < seq_len
    acc = tl.zeros([BC, BC], dtype=tl.float32)
    for i_k in range(tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)
        m_k = o_k < K
        m_ik = m_i[:, None] & m_k[None, :]
        b_q = tl.load(q + (bos + rows_i)[:, None] * H * K + i_h * K + o_k[None, :], mask=m_ik, other=0.0)
        b_q = b_q.to(tl.float32)
        b_gq = tl.load(Gq + (bos + rows_i)[:, None] * H * K + i_h * K + o_k[None, :], mask=m_ik, other=0.0)
        if i_i > i_j:
            ref = bos + i_c * BT + i_i * BC - 1
            g_ref = tl.load(G + ref * H * K + i_h * K + o_k, mask=m_k, other=0.0)
            b_qg = b_q * tl.exp(
                tl.where(m_i[:, None], b_gq - g_ref[None, :], 0.0)
            )  # padded rows: exponent <= 0
            b_kt = tl.load(k + (bos + rows_j)[None, :] * H * K + i_h * K + o_k[:, None],
                           mask=m_k[:, None], other=0.0).to(tl.float32)
            b_gkt = tl.load(G + (bos + rows_j)[None, :] * H * K + i_h * K + o_k[:, None],
                            mask=m_k[:, None], other=0.0)
            acc += tl.dot(b_qg, b_kt * tl.exp(g_ref[:, None] - b_gkt), input_precision=DOT_PREC)
        else:
            for j in range(BC):
                row_j = i_c * BT + i_i * BC + j
                m_jk = m_k & (
                    (o_k * 0 + row_j) < seq_len
                )  # block-shaped: the interpreter rejects scalar masks
                b_kj = tl.load(k + (bos + row_j) * H * K + i_h * K + o_k, mask=m_jk, other=0.0).to(tl.float32)
                b_gj = tl.load(G + (bos + row_j) * H * K + i_h * K + o_k, mask=m_jk, other=0.0)
                if USE_U:
                    keep = (o_c > j) & m_i
                else:
                    keep = (o_c >= j) & m_i
                decay = tl.exp(tl.where(keep[:, None], b_gq - b_gj[None, :], float("-inf")))
                col = tl.sum(b_q * b_kj[None, :] * decay, 1)
                acc += tl.where(o_c[None, :] == j, col[:, None], 0.0)
            if USE_U:
                b_k = tl.load(
                    k + (bos + rows_i)[:, None] * H * K + i_h * K + o_k[None, :], mask=m_ik, other=0.0
                )
                b_u = tl.load(u + i_h * K + o_k, mask=m_k, other=0.0).to(tl.float32)
                bonus = tl.sum(b_q * b_u[None, :] * b_k.to(tl.float32), 1)
                acc += tl.where(o_c[:, None] == o_c[None, :], bonus[:, None], 0.0)
    tl.store(A + (bos + rows_i)[:, None] * H * BT + i_h * BT + (i_j * BC + o_c)[None, :], acc * scale,
             mask=m_i[:, None])


@triton.autotune(configs=autotune_configs(), key=["BT", "BK", "BV", "HAS_G"])
@triton.jit
def output_fwd_kernel(q, v, Gq, h, A, o, scale, T, NT, cu_seqlens, chunk_indices, H: tl.constexpr,
                      K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                      HAS_G: tl.constexpr, HEAD_G: tl.constexpr, IS_VARLEN: tl.constexpr,
                      DOT_PREC: tl.constexpr):
    """Grid (cdiv(V, BV), chunks, B*H): ``o = scale (q * exp(Gq)) h_chunk + A v``."""
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    bos, seq_len, i_c, i_hc = chunk_lookup(i_t, i_b, T, NT, cu_seqlens, chunk_indices, IS_VARLEN)
    o_t = tl.arange(0, BT)
    rows = i_c * BT + o_t
    m_t = rows < seq_len
    o_v = i_v * BV + tl.arange(0, BV)
    m_v = o_v < V
    GK: tl.constexpr = 1 if HEAD_G else K
    acc = tl.zeros([BT, BV], dtype=tl.float32)
    for i_k in range(tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)
        m_k = o_k < K
        g_col = o_k * 0 if HEAD_G else o_k
        m_tk = m_t[:, None] & m_k[None, :]
        b_q = tl.load(q + (bos + rows)[:, None] * H * K + i_h * K + o_k[None, :], mask=m_tk, other=0.0)
        b_q = b_q.to(tl.float32)
        if HAS_G:
            b_gq = tl.load(
                Gq + (bos + rows)[:, None] * H * GK + i_h * GK + g_col[None, :], mask=m_tk, other=0.0
            )
            b_q = tl.where(m_tk, b_q * tl.exp(b_gq), 0.0)
        b_h = tl.load(h + i_hc * H * K * V + i_h * K * V + o_k[:, None] * V + o_v[None, :],
                      mask=m_k[:, None] & m_v[None, :], other=0.0)
        acc += tl.dot(b_q, b_h, input_precision=DOT_PREC)
    acc *= scale
    b_A = tl.load(A + (bos + rows)[:, None] * H * BT + i_h * BT + o_t[None, :], mask=m_t[:, None], other=0.0)
    b_v = tl.load(v + (bos + rows)[:, None] * H * V + i_h * V + o_v[None, :],
                  mask=m_t[:, None] & m_v[None, :], other=0.0).to(tl.float32)
    acc += tl.dot(b_A, b_v, input_precision=DOT_PREC)
    tl.store(o + (bos + rows)[:, None] * H * V + i_h * V + o_v[None, :], acc.to(o.dtype.element_ty),
             mask=m_t[:, None] & m_v[None, :])
