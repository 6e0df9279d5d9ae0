"""Triton backward of sliding-window attention: delta, dq, and dk/dv kernels (fp32 arithmetic).

With s = scale * q k^T, p = exp(s - lse) (lse from the forward) and delta_i = sum_d o_id do_id:
    dv_j = sum_i p_ij do_i,   ds_ij = p_ij (do_i . v_j - delta_i),
    dq_i = scale * sum_j ds_ij k_j,   dk_j = scale * sum_i ds_ij q_i.
dq programs own a query block and loop over its window's keys (like the forward); dk/dv programs
own a key block of one kv head and loop over the G query heads that read it and over the queries
whose window contains it, [n0, n0 + BLOCK_N - 1 + w). No atomics.
With ``HAS_GATE`` (the forget gate's bias c_i − c_j in every score) the dq programs also store
dc_i = Σ_j ds_ij and the dk/dv programs −Σ_i ds_ij for each query head reading their keys; their sum is
the gradient of c.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from recall_lm.kernels.swa.triton_common import (
    dot_precision,
    head_block,
    launch_grid,
    outer_block,
)
from recall_lm.kernels.swa.triton_forward import inner_configs, sequence_block
from recall_lm.kernels.utils import interpreter_enabled

DELTA_BLOCK = 16 if interpreter_enabled() else 64


@triton.jit
def swa_bwd_delta_kernel(
    o, do, delta,  # o, do: [tokens, H, D]; delta: [tokens, H] fp32
    n_tokens,
    H: tl.constexpr, D: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):
    h = tl.program_id(1)
    toks = tl.program_id(0).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)
    dims = tl.arange(0, BLOCK_D)
    mask = (toks < n_tokens)[:, None] & (dims < D)[None, :]
    off = toks[:, None] * (H * D) + h * D + dims[None, :]
    b_o = tl.load(o + off, mask=mask, other=0.0).to(tl.float32)
    b_do = tl.load(do + off, mask=mask, other=0.0).to(tl.float32)
    tl.store(delta + toks * H + h, tl.sum(b_o * b_do, axis=1), mask=toks < n_tokens)


@triton.autotune(configs=inner_configs("BLOCK_N"), key=["BLOCK_D", "G", "IS_VARLEN", "DOT_PRECISION"])
@triton.jit
def swa_bwd_dq_kernel(
    q, k, v, do, lse, delta, dq,  # q, do, dq [tokens, H, D]; k, v [tokens, H / G, D]; lse, delta [tokens, H]
    c, dc,  # HAS_GATE only: [tokens, H] fp32 gate bias and the query side of its gradient
    cu_seqlens, table,
    scale, window, T,
    H: tl.constexpr, G: tl.constexpr, D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    IS_VARLEN: tl.constexpr, DOT_PRECISION: tl.constexpr, HAS_GATE: tl.constexpr = False,
):
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    HK: tl.constexpr = H // G
    bos, eos, blk = sequence_block(tl.program_id(0), b, cu_seqlens, table, T, IS_VARLEN)

    m0 = bos + blk * BLOCK_M
    rows = m0 + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    row_ok = rows < eos
    dim_ok = dims < D
    q_mask = row_ok[:, None] & dim_ok[None, :]
    q_off = rows[:, None] * (H * D) + h * D + dims[None, :]
    b_q = tl.load(q + q_off, mask=q_mask, other=0.0).to(tl.float32)
    b_do = tl.load(do + q_off, mask=q_mask, other=0.0).to(tl.float32)
    b_lse2 = tl.load(lse + rows * H + h, mask=row_ok, other=0.0) * 1.4426950408889634
    b_delta = tl.load(delta + rows * H + h, mask=row_ok, other=0.0)
    qk_scale = scale * 1.4426950408889634
    b_dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    b_dc = tl.zeros([BLOCK_M], tl.float32)
    if HAS_GATE:
        b_cq = tl.load(c + rows * H + h, mask=row_ok, other=0.0) * 1.4426950408889634

    lo = tl.maximum(bos, m0 - window + 1)
    hi = tl.minimum(m0 + BLOCK_M, eos)
    for start in range(lo, hi, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        kv_off = cols[:, None] * (HK * D) + (h // G) * D + dims[None, :]
        kv_mask = (cols < hi)[:, None] & dim_ok[None, :]
        b_k = tl.load(k + kv_off, mask=kv_mask, other=0.0).to(tl.float32)
        b_v = tl.load(v + kv_off, mask=kv_mask, other=0.0).to(tl.float32)

        s = tl.dot(b_q, tl.trans(b_k), input_precision=DOT_PRECISION) * qk_scale
        if HAS_GATE:
            b_ck = tl.load(c + cols * H + h, mask=cols < hi, other=0.0) * 1.4426950408889634
            s += b_cq[:, None] - b_ck[None, :]
        diff = rows[:, None] - cols[None, :]
        allowed = (diff >= 0) & (diff < window) & (cols < hi)[None, :] & row_ok[:, None]
        p = tl.where(allowed, tl.exp2(s - b_lse2[:, None]), 0.0)
        dp = tl.dot(b_do, tl.trans(b_v), input_precision=DOT_PRECISION)
        ds = p * (dp - b_delta[:, None])
        b_dq += tl.dot(ds, b_k, input_precision=DOT_PRECISION)
        if HAS_GATE:
            b_dc += tl.sum(ds, axis=1)

    tl.store(dq + q_off, (b_dq * scale).to(dq.dtype.element_ty), mask=q_mask)
    if HAS_GATE:
        tl.store(dc + rows * H + h, b_dc, mask=row_ok)


@triton.autotune(configs=inner_configs("BLOCK_M"), key=["BLOCK_D", "G", "IS_VARLEN", "DOT_PRECISION"])
@triton.jit
def swa_bwd_dkdv_kernel(
    q, k, v, do, lse, delta, dk, dv,  # dk, dv: [tokens, H // G, D]
    c, dc,  # HAS_GATE only: [tokens, H] fp32 gate bias and the key side of its gradient
    cu_seqlens, table,
    scale, window, T,
    H: tl.constexpr, G: tl.constexpr, D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    IS_VARLEN: tl.constexpr, DOT_PRECISION: tl.constexpr, HAS_GATE: tl.constexpr = False,
):
    HK: tl.constexpr = H // G
    pid_bh = tl.program_id(1)
    b = pid_bh // HK
    hk = pid_bh % HK
    bos, eos, blk = sequence_block(tl.program_id(0), b, cu_seqlens, table, T, IS_VARLEN)

    n0 = bos + blk * BLOCK_N
    cols = n0 + tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    col_ok = cols < eos
    dim_ok = dims < D
    kv_mask = col_ok[:, None] & dim_ok[None, :]
    kv_off = cols[:, None] * (HK * D) + hk * D + dims[None, :]
    b_k = tl.load(k + kv_off, mask=kv_mask, other=0.0).to(tl.float32)
    b_v = tl.load(v + kv_off, mask=kv_mask, other=0.0).to(tl.float32)
    qk_scale = scale * 1.4426950408889634
    b_dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    b_dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)

    # The last key of this block, n0 + BLOCK_N - 1, is seen by queries up to n0 + BLOCK_N - 2 + w.
    hi = tl.minimum(n0 + BLOCK_N - 1 + window, eos)
    for g in range(G):
        h = hk * G + g
        b_dc = tl.zeros([BLOCK_N], tl.float32)
        if HAS_GATE:
            b_ck = tl.load(c + cols * H + h, mask=col_ok, other=0.0) * 1.4426950408889634
        for start in range(n0, hi, BLOCK_M):
            rows = start + tl.arange(0, BLOCK_M)
            row_ok = rows < hi
            q_off = rows[:, None] * (H * D) + h * D + dims[None, :]
            q_mask = row_ok[:, None] & dim_ok[None, :]
            b_q = tl.load(q + q_off, mask=q_mask, other=0.0).to(tl.float32)
            b_do = tl.load(do + q_off, mask=q_mask, other=0.0).to(tl.float32)
            b_lse2 = tl.load(lse + rows * H + h, mask=row_ok, other=0.0) * 1.4426950408889634
            b_delta = tl.load(delta + rows * H + h, mask=row_ok, other=0.0)

            # Transposed scores [BLOCK_N keys, BLOCK_M queries], so dk and dv are plain dots.
            s_t = tl.dot(b_k, tl.trans(b_q), input_precision=DOT_PRECISION) * qk_scale
            if HAS_GATE:
                b_cq = tl.load(c + rows * H + h, mask=row_ok, other=0.0) * 1.4426950408889634
                s_t += b_cq[None, :] - b_ck[:, None]
            diff = rows[None, :] - cols[:, None]
            allowed = (diff >= 0) & (diff < window) & row_ok[None, :] & col_ok[:, None]
            p_t = tl.where(allowed, tl.exp2(s_t - b_lse2[None, :]), 0.0)
            b_dv += tl.dot(p_t, b_do, input_precision=DOT_PRECISION)
            dp_t = tl.dot(b_v, tl.trans(b_do), input_precision=DOT_PRECISION)
            ds_t = p_t * (dp_t - b_delta[None, :])
            b_dk += tl.dot(ds_t, b_q, input_precision=DOT_PRECISION)
            if HAS_GATE:
                b_dc -= tl.sum(ds_t, axis=1)
        if HAS_GATE:
            tl.store(dc + cols * H + h, b_dc, mask=col_ok)

    tl.store(dk + kv_off, (b_dk * scale).to(dk.dtype.element_ty), mask=kv_mask)
    tl.store(dv + kv_off, b_dv.to(dv.dtype.element_ty), mask=kv_mask)


def swa_backward(q, k, v, o, lse, do, window: int, scale: float, cu_seqlens=None, table=None, c=None):
    """Launch delta, dq and dk/dv kernels. Shapes as in ``swa_forward``; do like o.

    Returns dq [B, T, H, D], dk and dv [B, T, Hk, D], in the dtypes of q, k, v, and with the gate bias
    ``c`` its gradient dc [B, T, H] fp32 (else None).
    """
    B, T, H, D = q.shape
    Hk = k.shape[2]
    G = H // Hk
    dq = torch.empty_like(q)
    dk = torch.empty_like(k)
    dv = torch.empty_like(v)
    gated = c is not None
    dc_q = torch.zeros(B, T, H, device=q.device, dtype=torch.float32) if gated else None
    dc_k = torch.zeros_like(dc_q) if gated else None
    if B * T == 0:
        return dq, dk, dv, dc_q
    block_d = head_block(D)
    delta = torch.empty(B, T, H, device=q.device, dtype=torch.float32)
    swa_bwd_delta_kernel[(triton.cdiv(B * T, DELTA_BLOCK), H)](
        o, do, delta, B * T, H=H, D=D, BLOCK_T=DELTA_BLOCK, BLOCK_D=block_d,
    )
    block = outer_block()
    window = min(window, B * T)
    common = dict(H=H, G=G, D=D, BLOCK_D=block_d, DOT_PRECISION=dot_precision(q.dtype), HAS_GATE=gated)
    gate_args = (c, dc_q) if gated else (lse, lse)
    grid, cu_seqlens, table = launch_grid(B, T, H, block, cu_seqlens, table, q.device)
    varlen = table.numel() > 0
    if grid[0] > 0:
        swa_bwd_dq_kernel[grid](
            q, k, v, do, lse, delta, dq, *gate_args, cu_seqlens, table, scale, window, T,
            BLOCK_M=block, IS_VARLEN=varlen, **common,
        )
        grid = (grid[0], grid[1] // G)  # one program per kv head
        swa_bwd_dkdv_kernel[grid](
            q, k, v, do, lse, delta, dk, dv, *((c, dc_k) if gated else gate_args), cu_seqlens, table, scale,
            window, T,
            BLOCK_N=block, IS_VARLEN=varlen, **common,
        )
    return dq, dk, dv, (dc_q + dc_k if gated else None)
