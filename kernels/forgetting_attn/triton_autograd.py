"""Forgetting attention on the sliding-window attention's Triton kernels (``recall_lm.kernels.swa``):
flash-attention style forward and hand-written backward, with the forget gate's bias c_i − c_j added to
every score (``HAS_GATE``) and its gradient dc returned by the dq and dk/dv programs; a window of all the
tokens is plain causal attention. c is the cumulative sum of g in fp32 along each row (also across the
documents of a packed row: only differences within a document enter), and dg is the reverse cumulative
sum of dc (each document's dc sums to zero, so the documents after it add nothing)."""
from __future__ import annotations

import torch

from recall_lm.kernels.swa.triton_backward import swa_backward
from recall_lm.kernels.swa.triton_common import block_table, outer_block
from recall_lm.kernels.swa.triton_forward import swa_forward


class ForgettingAttentionTriton(torch.autograd.Function):
    """q [B, T, H, D], k, v [B, T, Hk, D], g [B, T, H]; saves q, k, v, c, o and lse [B, T, H]."""

    @staticmethod
    def forward(ctx, q, k, v, g, window, scale: float, cu_seqlens):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        c = g.float().cumsum(1).contiguous()
        window = q.shape[0] * q.shape[1] if window is None else window
        table = None
        if cu_seqlens is not None:
            cu_seqlens = cu_seqlens.to(torch.int32).contiguous()
            table = block_table(cu_seqlens, outer_block())
        o, lse = swa_forward(q, k, v, window, scale, cu_seqlens, table, c=c)
        ctx.save_for_backward(q, k, v, c, o, lse, cu_seqlens, table)
        ctx.window, ctx.scale, ctx.g_dtype = window, scale, g.dtype
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, c, o, lse, cu_seqlens, table = ctx.saved_tensors
        dq, dk, dv, dc = swa_backward(
            q, k, v, o, lse, do.contiguous(), ctx.window, ctx.scale, cu_seqlens, table, c=c
        )
        dg = dc.flip(1).cumsum(1).flip(1)  # c = cumsum(g): dg_t = Σ_{s ≥ t} dc_s
        return dq, dk, dv, dg.to(ctx.g_dtype), None, None, None


def forgetting_attention_triton(q, k, v, g, scale: float, window_size=None, cu_seqlens=None):
    """Differentiable Triton forgetting attention (shapes as in ``recall_lm.kernels.forgetting_attn``;
    v has q's head dim here)."""
    return ForgettingAttentionTriton.apply(q, k, v, g, window_size, scale, cu_seqlens)
