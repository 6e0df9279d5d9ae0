"""torch.autograd.Function around the Triton forward and backward kernels."""
from __future__ import annotations

import torch

from recall_lm.kernels.swa.triton_backward import swa_backward
from recall_lm.kernels.swa.triton_common import block_table, outer_block
from recall_lm.kernels.swa.triton_forward import swa_forward


class SlidingWindowAttentionTriton(torch.autograd.Function):
    """o = SWA(q, k, v); q [B, T, H, D], k, v [B, T, Hk, D]; saves q, k, v, o and lse [B, T, H]."""

    @staticmethod
    def forward(ctx, q, k, v, window: int, scale: float, cu_seqlens):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        table = None
        if cu_seqlens is not None:
            cu_seqlens = cu_seqlens.to(torch.int32).contiguous()
            table = block_table(cu_seqlens, outer_block())
        o, lse = swa_forward(q, k, v, window, scale, cu_seqlens, table)
        ctx.save_for_backward(q, k, v, o, lse, cu_seqlens, table)
        ctx.window, ctx.scale = window, scale
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse, cu_seqlens, table = ctx.saved_tensors
        dq, dk, dv, _ = swa_backward(
            q, k, v, o, lse, do.contiguous(), ctx.window, ctx.scale, cu_seqlens, table
        )
        return dq, dk, dv, None, None, None


def swa_triton(q, k, v, window_size: int, scale: float, cu_seqlens=None) -> torch.Tensor:
    """Differentiable Triton sliding-window attention (shapes as in ``recall_lm.kernels.swa``)."""
    return SlidingWindowAttentionTriton.apply(q, k, v, window_size, scale, cu_seqlens)
