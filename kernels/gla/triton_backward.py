"""Triton backward kernels of chunked gated linear attention.

With ``dh`` the gradient of the state at each chunk END (reverse state passing), ``dA_ij = scale do_i.v_j``
(j <= i) and chunk-start states ``h``:

* ``dv_j = sum_i A_ij do_i + (k_j * exp(G_last - G_j)) dh``
* ``dq_i = scale exp(Gq_i) * (do_i h^T) + sum_{j<(=)i} dA_ij k_j exp(Gq_i - G_j)  [+ dA_ii u * k_i]``
* ``dk_j = exp(G_last - G_j) * (v_j dh^T) + sum_{i>(=)j} dA_ij q_i exp(Gq_i - G_j)  [+ dA_ii u * q_j]``
* ``du = sum_i dA_ii q_i * k_i``
* every gate factor is ``exp(+Gq_i)`` on a query or ``exp(-G_j)`` on a key, so with the non-bonus parts
  of dq and dk, ``dg_t = sum_{s>=t} (q_s dq_s - k_s dk_s) [- q_t dq_t with u] + sum_V(S_T * dS_T)``
  (reverse cumsum over the sequence; the last term is the final state's share).
"""
from __future__ import annotations

import triton
import triton.language as tl

from recall_lm.kernels.gla.triton_common import autotune_configs, chunk_lookup, sequence_bounds


@triton.autotune(configs=autotune_configs(), key=["BT", "BK", "BV", "HAS_G"])
@triton.jit
def state_bwd_kernel(
    q,
    do,
    Gq,
    G,
    dh,
    dht,
    dh0,
    scale,
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
    USE_DHT: tl.constexpr,
    STORE_DH0: tl.constexpr,
    IS_VARLEN: tl.constexpr,
    DOT_PREC: tl.constexpr,
):
    """Grid (cdiv(K, BK), cdiv(V, BV), N*H), chunks in reverse. Stores the gradient of the state at each
    chunk end into ``dh``, then ``dh <- exp(G_last) * dh + scale (q * exp(Gq))^T do``; ``dh0`` at the end."""
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

    b_dh = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_DHT:
        b_dh += tl.load(dht + i_n * H * K * V + s_off, mask=m_kv, other=0.0).to(tl.float32)
    for i_r in range(NT):
        i_t = NT - 1 - i_r
        tl.store(dh + (boh + i_t) * H * K * V + s_off, b_dh, mask=m_kv)
        rows = i_t * BT + o_t
        m_t = rows < seq_len
        b_qt = tl.load(q + (bos + rows)[None, :] * H * K + i_h * K + o_k[:, None],
                       mask=m_k[:, None] & m_t[None, :], other=0.0).to(tl.float32)
        b_do = tl.load(do + (bos + rows)[:, None] * H * V + i_h * V + o_v[None, :],
                       mask=m_t[:, None] & m_v[None, :], other=0.0).to(tl.float32)
        if HAS_G:
            last = tl.minimum(i_t * BT + BT, seq_len) - 1
            g_last = tl.load(G + (bos + last) * H * GK + i_h * GK + g_col, mask=m_k, other=0.0)
            b_gqt = tl.load(Gq + (bos + rows)[None, :] * H * GK + i_h * GK + g_col[:, None],
                            mask=m_k[:, None] & m_t[None, :], other=0.0)
            b_qt = tl.where(m_t[None, :], b_qt * tl.exp(b_gqt), 0.0)
            b_dh *= tl.exp(g_last)[:, None]
        b_dh += tl.dot(b_qt, b_do, input_precision=DOT_PREC) * scale
    if STORE_DH0:
        tl.store(dh0 + i_n * H * K * V + s_off, b_dh, mask=m_kv)


@triton.autotune(configs=autotune_configs(), key=["BT", "BV"])
@triton.jit
def scores_bwd_kernel(do, v, dA, scale, T, NT, cu_seqlens, chunk_indices, H: tl.constexpr, V: tl.constexpr,
                      BT: tl.constexpr, BV: tl.constexpr, IS_VARLEN: tl.constexpr, DOT_PREC: tl.constexpr):
    """Grid (chunks, B*H): ``dA_ij = scale do_i.v_j`` for j <= i inside the chunk, else 0."""
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    bos, seq_len, i_c, _ = chunk_lookup(i_t, i_b, T, NT, cu_seqlens, chunk_indices, IS_VARLEN)
    o_t = tl.arange(0, BT)
    rows = i_c * BT + o_t
    m_t = rows < seq_len
    acc = tl.zeros([BT, BT], dtype=tl.float32)
    for i_v in range(tl.cdiv(V, BV)):
        o_v = i_v * BV + tl.arange(0, BV)
        m_v = o_v < V
        b_do = tl.load(do + (bos + rows)[:, None] * H * V + i_h * V + o_v[None, :],
                       mask=m_t[:, None] & m_v[None, :], other=0.0).to(tl.float32)
        b_vt = tl.load(v + (bos + rows)[None, :] * H * V + i_h * V + o_v[:, None],
                       mask=m_v[:, None] & m_t[None, :], other=0.0).to(tl.float32)
        acc += tl.dot(b_do, b_vt, input_precision=DOT_PREC)
    keep = (o_t[:, None] >= o_t[None, :]) & m_t[:, None] & m_t[None, :]
    tl.store(dA + (bos + rows)[:, None] * H * BT + i_h * BT + o_t[None, :], tl.where(keep, acc * scale, 0.0),
             mask=m_t[:, None])


@triton.autotune(configs=autotune_configs(), key=["BT", "BK", "BV", "HAS_G"])
@triton.jit
def dv_kernel(k, G, A, do, dh, dv, T, NT, cu_seqlens, chunk_indices, H: tl.constexpr, K: tl.constexpr,
              V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, HAS_G: tl.constexpr,
              HEAD_G: tl.constexpr, IS_VARLEN: tl.constexpr, DOT_PREC: tl.constexpr):
    """Grid (cdiv(V, BV), chunks, B*H): ``dv = A^T do + (k * exp(G_last - G)) dh_chunk_end``."""
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    bos, seq_len, i_c, i_hc = chunk_lookup(i_t, i_b, T, NT, cu_seqlens, chunk_indices, IS_VARLEN)
    o_t = tl.arange(0, BT)
    rows = i_c * BT + o_t
    m_t = rows < seq_len
    o_v = i_v * BV + tl.arange(0, BV)
    m_v = o_v < V
    m_tv = m_t[:, None] & m_v[None, :]
    GK: tl.constexpr = 1 if HEAD_G else K
    b_At = tl.load(A + (bos + rows)[None, :] * H * BT + i_h * BT + o_t[:, None], mask=m_t[None, :], other=0.0)
    b_do = tl.load(do + (bos + rows)[:, None] * H * V + i_h * V + o_v[None, :], mask=m_tv, other=0.0)
    acc = tl.dot(b_At, b_do.to(tl.float32), input_precision=DOT_PREC)
    last = tl.minimum(i_c * BT + BT, seq_len) - 1
    for i_k in range(tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)
        m_k = o_k < K
        g_col = o_k * 0 if HEAD_G else o_k
        m_tk = m_t[:, None] & m_k[None, :]
        b_k = tl.load(k + (bos + rows)[:, None] * H * K + i_h * K + o_k[None, :], mask=m_tk, other=0.0)
        b_k = b_k.to(tl.float32)
        if HAS_G:
            g_last = tl.load(G + (bos + last) * H * GK + i_h * GK + g_col, mask=m_k, other=0.0)
            b_g = tl.load(
                G + (bos + rows)[:, None] * H * GK + i_h * GK + g_col[None, :], mask=m_tk, other=0.0
            )
            b_k = tl.where(m_tk, b_k * tl.exp(g_last[None, :] - b_g), 0.0)
        b_dh = tl.load(dh + i_hc * H * K * V + i_h * K * V + o_k[:, None] * V + o_v[None, :],
                       mask=m_k[:, None] & m_v[None, :], other=0.0)
        acc += tl.dot(b_k, b_dh, input_precision=DOT_PREC)
    tl.store(
        dv + (bos + rows)[:, None] * H * V + i_h * V + o_v[None, :], acc.to(dv.dtype.element_ty), mask=m_tv
    )


@triton.autotune(configs=autotune_configs(), key=["BT", "BK"])
@triton.jit
def dqk_intra_channel_kernel(q, k, G, Gq, dA, dq_intra, dk_intra, T, NT, cu_seqlens, chunk_indices,
                             H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr,
                             BK: tl.constexpr, USE_U: tl.constexpr, IS_VARLEN: tl.constexpr,
                             DOT_PREC: tl.constexpr):
    """Grid (cdiv(K, BK), chunks * NC, B*H); per-channel gate. For sub-chunk ``i`` of a chunk:
    ``dq_intra`` from keys at or before it, ``dk_intra`` from queries at or after it (fp32 outputs).

    Off-diagonal blocks use a reference row r so every exponent is <= 0: for dq the row before the
    sub-chunk, for dk its last row. Diagonal blocks are exact, one column (dq) or row (dk) at a time."""
    NC: tl.constexpr = BT // BC
    i_k, i_tn, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_t, i_i = i_tn // NC, i_tn % NC
    i_b, i_h = i_bh // H, i_bh % H
    bos, seq_len, i_c, _ = chunk_lookup(i_t, i_b, T, NT, cu_seqlens, chunk_indices, IS_VARLEN)
    start = i_c * BT + i_i * BC
    if start >= seq_len:
        return
    o_c = tl.arange(0, BC)
    rows_i = start + o_c
    m_i = rows_i < seq_len
    o_k = i_k * BK + tl.arange(0, BK)
    m_k = o_k < K
    m_ik = m_i[:, None] & m_k[None, :]
    offs_i = (bos + rows_i)[:, None] * H * K + i_h * K + o_k[None, :]
    b_g = tl.load(G + offs_i, mask=m_ik, other=0.0)
    b_gq = tl.load(Gq + offs_i, mask=m_ik, other=0.0)

    b_dq = tl.zeros([BC, BK], dtype=tl.float32)
    if i_i > 0:
        g_ref = tl.load(G + (bos + start - 1) * H * K + i_h * K + o_k, mask=m_k, other=0.0)
        for i_j in range(0, i_i):
            rows_j = i_c * BT + i_j * BC + o_c
            offs_j = (bos + rows_j)[:, None] * H * K + i_h * K + o_k[None, :]
            b_kj = tl.load(k + offs_j, mask=m_k[None, :], other=0.0).to(tl.float32)
            b_gj = tl.load(G + offs_j, mask=m_k[None, :], other=0.0)
            b_dA = tl.load(dA + (bos + rows_i)[:, None] * H * BT + i_h * BT + (i_j * BC + o_c)[None, :],
                           mask=m_i[:, None], other=0.0)
            b_dq += tl.dot(b_dA, b_kj * tl.exp(g_ref[None, :] - b_gj), input_precision=DOT_PREC)
        b_dq *= tl.exp(tl.where(m_ik, b_gq - g_ref[None, :], 0.0))  # padded rows: exponent kept <= 0
    for j in range(BC):
        row_j = start + j
        m_jk = m_k & ((o_k * 0 + row_j) < seq_len)  # block-shaped: the interpreter rejects scalar masks
        b_kj = tl.load(k + (bos + row_j) * H * K + i_h * K + o_k, mask=m_jk, other=0.0).to(tl.float32)
        b_gj = tl.load(G + (bos + row_j) * H * K + i_h * K + o_k, mask=m_jk, other=0.0)
        b_dAj = tl.load(dA + (bos + rows_i) * H * BT + i_h * BT + i_i * BC + j, mask=m_i, other=0.0)
        if USE_U:
            keep = (o_c > j) & m_i
        else:
            keep = (o_c >= j) & m_i
        decay = tl.exp(tl.where(keep[:, None], b_gq - b_gj[None, :], float("-inf")))
        b_dq += b_dAj[:, None] * b_kj[None, :] * decay

    b_dk = tl.zeros([BC, BK], dtype=tl.float32)
    if i_i < NC - 1:
        ref = tl.minimum(start + BC, seq_len) - 1
        g_ref = tl.load(G + (bos + ref) * H * K + i_h * K + o_k, mask=m_k, other=0.0)
        for i_a in range(i_i + 1, NC):
            rows_a = i_c * BT + i_a * BC + o_c
            m_a = rows_a < seq_len
            m_ak = m_a[:, None] & m_k[None, :]
            offs_a = (bos + rows_a)[:, None] * H * K + i_h * K + o_k[None, :]
            b_qa = tl.load(q + offs_a, mask=m_ak, other=0.0).to(tl.float32)
            b_gqa = tl.load(Gq + offs_a, mask=m_ak, other=0.0)
            b_qa *= tl.exp(tl.where(m_ak, b_gqa - g_ref[None, :], 0.0))  # padded rows: exponent kept <= 0
            b_dAt = tl.load(dA + (bos + rows_a)[None, :] * H * BT + i_h * BT + (i_i * BC + o_c)[:, None],
                            mask=m_a[None, :], other=0.0)
            b_dk += tl.dot(b_dAt, b_qa, input_precision=DOT_PREC)
        b_dk = tl.where(m_ik, b_dk * tl.exp(g_ref[None, :] - b_g), 0.0)
    for i in range(BC):
        row_q = start + i
        m_row = (o_c * 0 + row_q) < seq_len
        m_qk = m_k & ((o_k * 0 + row_q) < seq_len)
        b_qi = tl.load(q + (bos + row_q) * H * K + i_h * K + o_k, mask=m_qk, other=0.0).to(tl.float32)
        b_gqi = tl.load(Gq + (bos + row_q) * H * K + i_h * K + o_k, mask=m_qk, other=0.0)
        b_dAi = tl.load(dA + (bos + row_q) * H * BT + i_h * BT + i_i * BC + o_c, mask=m_i & m_row, other=0.0)
        if USE_U:
            keep = (o_c < i) & m_i & m_row
        else:
            keep = (o_c <= i) & m_i & m_row
        decay = tl.exp(tl.where(keep[:, None], b_gqi[None, :] - b_g, float("-inf")))
        b_dk += b_dAi[:, None] * b_qi[None, :] * decay
    tl.store(dq_intra + offs_i, b_dq, mask=m_ik)
    tl.store(dk_intra + offs_i, b_dk, mask=m_ik)


@triton.autotune(configs=autotune_configs(), key=["BT", "BK", "BV", "HAS_G"])
@triton.jit
def dqk_kernel(q, k, v, u, G, Gq, h, do, dh, dA, dq_intra, dk_intra, dq, dk, dgq, dgk, du_part, scale, T, NT,
               cu_seqlens, chunk_indices, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr,
               BK: tl.constexpr, BV: tl.constexpr, HAS_G: tl.constexpr, HEAD_G: tl.constexpr,
               CHANNEL_G: tl.constexpr, USE_U: tl.constexpr, IS_VARLEN: tl.constexpr, DOT_PREC: tl.constexpr):
    """Grid (cdiv(K, BK), chunks, B*H). Inter-chunk parts of dq, dk, plus the intra part (read from
    ``dq_intra``/``dk_intra`` for per-channel gates, or computed here for scalar gates), then the gate
    terms ``dgq = q*dq``, ``dgk = k*dk`` (before the bonus), then the bonus terms and du per chunk."""
    i_k, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    bos, seq_len, i_c, i_hc = chunk_lookup(i_t, i_b, T, NT, cu_seqlens, chunk_indices, IS_VARLEN)
    o_t = tl.arange(0, BT)
    rows = i_c * BT + o_t
    m_t = rows < seq_len
    o_k = i_k * BK + tl.arange(0, BK)
    m_k = o_k < K
    m_tk = m_t[:, None] & m_k[None, :]
    offs = (bos + rows)[:, None] * H * K + i_h * K + o_k[None, :]
    GK: tl.constexpr = 1 if HEAD_G else K
    g_col = o_k * 0 if HEAD_G else o_k

    b_dq = tl.zeros([BT, BK], dtype=tl.float32)
    b_dk = tl.zeros([BT, BK], dtype=tl.float32)
    for i_v in range(tl.cdiv(V, BV)):
        o_v = i_v * BV + tl.arange(0, BV)
        m_v = o_v < V
        m_tv = m_t[:, None] & m_v[None, :]
        b_do = tl.load(do + (bos + rows)[:, None] * H * V + i_h * V + o_v[None, :], mask=m_tv, other=0.0)
        b_v = tl.load(v + (bos + rows)[:, None] * H * V + i_h * V + o_v[None, :], mask=m_tv, other=0.0)
        s_offt = i_hc * H * K * V + i_h * K * V + o_k[None, :] * V + o_v[:, None]
        m_vk = m_v[:, None] & m_k[None, :]
        b_ht = tl.load(h + s_offt, mask=m_vk, other=0.0)
        b_dht = tl.load(dh + s_offt, mask=m_vk, other=0.0)
        b_dq += tl.dot(b_do.to(tl.float32), b_ht, input_precision=DOT_PREC)
        b_dk += tl.dot(b_v.to(tl.float32), b_dht, input_precision=DOT_PREC)
    b_q = tl.load(q + offs, mask=m_tk, other=0.0).to(tl.float32)
    b_k = tl.load(k + offs, mask=m_tk, other=0.0).to(tl.float32)
    if HAS_G:
        last = tl.minimum(i_c * BT + BT, seq_len) - 1
        g_offs = (bos + rows)[:, None] * H * GK + i_h * GK + g_col[None, :]
        b_gq = tl.load(Gq + g_offs, mask=m_tk, other=0.0)
        b_g = tl.load(G + g_offs, mask=m_tk, other=0.0)
        g_last = tl.load(G + (bos + last) * H * GK + i_h * GK + g_col, mask=m_k, other=0.0)
        b_dq = tl.where(m_tk, b_dq * tl.exp(b_gq), 0.0)
        b_dk = tl.where(m_tk, b_dk * tl.exp(g_last[None, :] - b_g), 0.0)
    b_dq *= scale

    if CHANNEL_G:
        b_dq += tl.load(dq_intra + offs, mask=m_tk, other=0.0)
        b_dk += tl.load(dk_intra + offs, mask=m_tk, other=0.0)
    else:
        b_dA = tl.load(
            dA + (bos + rows)[:, None] * H * BT + i_h * BT + o_t[None, :], mask=m_t[:, None], other=0.0
        )
        if USE_U:
            keep = o_t[:, None] > o_t[None, :]
        else:
            keep = o_t[:, None] >= o_t[None, :]
        keep = keep & m_t[:, None] & m_t[None, :]
        if HAS_G:
            b_gq1 = tl.load(Gq + (bos + rows) * H + i_h, mask=m_t, other=0.0)
            b_g1 = tl.load(G + (bos + rows) * H + i_h, mask=m_t, other=0.0)
            b_dA = b_dA * tl.exp(tl.where(keep, b_gq1[:, None] - b_g1[None, :], float("-inf")))
        else:
            b_dA = tl.where(keep, b_dA, 0.0)
        b_dq += tl.dot(b_dA, b_k, input_precision=DOT_PREC)
        b_dk += tl.dot(tl.trans(b_dA), b_q, input_precision=DOT_PREC)

    if HAS_G:
        tl.store(dgq + offs, b_q * b_dq, mask=m_tk)
        tl.store(dgk + offs, b_k * b_dk, mask=m_tk)
    if USE_U:
        b_dA_diag = tl.load(dA + (bos + rows) * H * BT + i_h * BT + o_t, mask=m_t, other=0.0)
        b_u = tl.load(u + i_h * K + o_k, mask=m_k, other=0.0).to(tl.float32)
        b_dq += b_dA_diag[:, None] * b_u[None, :] * b_k
        b_dk += b_dA_diag[:, None] * b_u[None, :] * b_q
        b_du = tl.sum(b_dA_diag[:, None] * b_q * b_k, 0)
        tl.store(du_part + i_hc * H * K + i_h * K + o_k, b_du, mask=m_k)
    tl.store(dq + offs, b_dq.to(dq.dtype.element_ty), mask=m_tk)
    tl.store(dk + offs, b_dk.to(dk.dtype.element_ty), mask=m_tk)


@triton.autotune(configs=autotune_configs(), key=["BT", "BK"])
@triton.jit
def gate_grad_kernel(
    dgq,
    dgk,
    dg_final,
    dg,
    T,
    cu_seqlens,
    H: tl.constexpr,
    K: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    USE_FINAL: tl.constexpr,
    USE_U: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    """Grid (cdiv(K, BK), N*H), chunks in reverse:
    ``dg_t = dg_final + sum_{s>=t} (dgq_s - dgk_s)``, minus ``dgq_t`` itself with u (fp32 out)."""
    i_k, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_h = i_nh // H, i_nh % H
    bos, seq_len = sequence_bounds(i_n, T, cu_seqlens, IS_VARLEN)
    NT = tl.cdiv(seq_len, BT)
    o_t = tl.arange(0, BT)
    o_k = i_k * BK + tl.arange(0, BK)
    m_k = o_k < K
    carry = tl.zeros([BK], dtype=tl.float32)
    if USE_FINAL:
        carry += tl.load(dg_final + i_n * H * K + i_h * K + o_k, mask=m_k, other=0.0)
    for i_r in range(NT):
        rows = (NT - 1 - i_r) * BT + o_t
        m_tk = (rows < seq_len)[:, None] & m_k[None, :]
        offs = (bos + rows)[:, None] * H * K + i_h * K + o_k[None, :]
        b_a = tl.load(dgq + offs, mask=m_tk, other=0.0)
        b_x = b_a - tl.load(dgk + offs, mask=m_tk, other=0.0)
        out = tl.cumsum(b_x, axis=0, reverse=True) + carry[None, :]
        if USE_U:
            out -= b_a
        carry += tl.sum(b_x, 0)
        tl.store(dg + offs, out, mask=m_tk)
