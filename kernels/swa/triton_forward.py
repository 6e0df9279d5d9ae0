"""Triton forward of sliding-window attention (flash-attention style, fp32 arithmetic).

One program = one block of BLOCK_M queries of one head. It visits only the key blocks that
intersect the union of its queries' windows, [m0 - w + 1, m0 + BLOCK_M), with an online
softmax, and stores o and the natural-log log-sum-exp of the scaled scores (for the backward).
Token indices are absolute in the flattened [B * T] (or packed varlen) token axis.

With ``HAS_GATE`` the scores carry the Forgetting Transformer's bias c_i − c_j (c [tokens, H] fp32, the
cumulative log forget gate of each query head: ``recall_lm.kernels.forgetting_attn``); a window of
B·T tokens is plain causal attention.
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
from recall_lm.kernels.utils import interpreter_enabled


def inner_configs(name: str) -> list:
    """Autotuning space of the inner (looped-over) block; one config in the interpreter."""
    if interpreter_enabled():
        return [triton.Config({name: 16}, num_warps=4, num_stages=1)]
    return [
        triton.Config({name: b}, num_warps=nw, num_stages=ns)
        for b in (32, 64)
        for nw in (4, 8)
        for ns in (1, 2)
    ]


@triton.jit
def sequence_block(pid_blk, b, cu_seqlens, table, T, IS_VARLEN: tl.constexpr):
    """(first token, end token, block index within the sequence) of this program's sequence."""
    if IS_VARLEN:
        seq = tl.load(table + 2 * pid_blk)
        blk = tl.load(table + 2 * pid_blk + 1)
        bos = tl.load(cu_seqlens + seq).to(tl.int64)
        eos = tl.load(cu_seqlens + seq + 1).to(tl.int64)
    else:
        blk = pid_blk
        bos = b.to(tl.int64) * T
        eos = bos + T
    return bos, eos, blk


@triton.autotune(configs=inner_configs("BLOCK_N"), key=["BLOCK_D", "G", "IS_VARLEN", "DOT_PRECISION"])
@triton.jit
def swa_fwd_kernel(
    q, k, v, o, lse,  # q, o: [tokens, H, D]; k, v: [tokens, H // G, D]; lse: [tokens, H] fp32
    c,  # HAS_GATE only: [tokens, H] fp32 cumulative log forget gates
    cu_seqlens, table,  # varlen only: [N + 1] offsets, [blocks, 2] (sequence, block)
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
    qo_mask = row_ok[:, None] & dim_ok[None, :]
    qo_off = rows[:, None] * (H * D) + h * D + dims[None, :]
    b_q = tl.load(q + qo_off, mask=qo_mask, other=0.0).to(tl.float32)
    qk_scale = scale * 1.4426950408889634  # scores in base 2: exp(x) = exp2(x * log2 e)
    if HAS_GATE:
        b_cq = tl.load(c + rows * H + h, mask=row_ok, other=0.0) * 1.4426950408889634

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)

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
        allowed = (diff >= 0) & (diff < window) & (cols < hi)[None, :]
        s = tl.where(allowed, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        # A row with no allowed key yet keeps m = -inf; subtract 0 there so exp2 gives 0, not NaN.
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp2(s - m_ref[:, None])
        alpha = tl.exp2(m_i - m_ref)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p, b_v, input_precision=DOT_PRECISION)
        m_i = m_new

    # Every stored row sees at least its own key, so l_i > 0 there; the guard is for padding rows.
    l_safe = tl.where(l_i > 0.0, l_i, 1.0)
    b_o = acc / l_safe[:, None]
    tl.store(o + qo_off, b_o.to(o.dtype.element_ty), mask=qo_mask)
    b_lse = (m_i + tl.log2(l_safe)) * 0.6931471805599453  # back to natural log
    tl.store(lse + rows * H + h, b_lse, mask=row_ok)


def swa_forward(q, k, v, window: int, scale: float, cu_seqlens=None, table=None, c=None):
    """Launch the forward kernel.

    q: [B, T, H, D], k, v: [B, T, Hk, D] contiguous; cu_seqlens [N + 1] with B == 1 and its
    ``block_table`` (built here if not given); c: optional [B, T, H] fp32 contiguous gate bias (the
    cumulative log forget gate). Returns o [B, T, H, D] (q's dtype) and lse [B, T, H] fp32 (natural log
    of the softmax normaliser of the scores).
    """
    B, T, H, D = q.shape
    G = H // k.shape[2]
    o = torch.empty_like(q)
    lse = torch.empty(B, T, H, device=q.device, dtype=torch.float32)
    block = outer_block()
    grid, cu_seqlens, table = launch_grid(B, T, H, block, cu_seqlens, table, q.device)
    if grid[0] * grid[1] == 0:
        return o, lse
    swa_fwd_kernel[grid](
        q, k, v, o, lse, lse if c is None else c, cu_seqlens, table, scale, min(window, B * T), T,
        H=H, G=G, D=D, BLOCK_M=block, BLOCK_D=head_block(D),
        IS_VARLEN=table.numel() > 0, DOT_PRECISION=dot_precision(q.dtype), HAS_GATE=c is not None,
    )
    return o, lse
