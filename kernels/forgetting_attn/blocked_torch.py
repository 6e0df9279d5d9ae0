"""Forgetting attention in PyTorch by query blocks, forward and backward, never a T × T tensor.

Query block n (C tokens) scores the keys it can see — from the window's start (or token 0) to the
block's end — at once: a ``[C, S]`` tile per head, S ≤ T (≤ window + C with a window), so at most
C · T scores live at a time. The forget-gate bias enters as ``c_i − c_j`` with c the cumulative
log-gate (fp32, fp64 for fp64 inputs): both sides are added to the scores before the row maximum is
taken, so no exponent ever exceeds 0 and nothing overflows at any length. The forward keeps o and the
row log-sum-exp; the backward recomputes each tile from them (as FlashAttention does):

    P = exp(s − lse),  dV += Pᵀ dO,  dS = P ⊙ (dO Vᵀ − rowsum(dO ⊙ O)),
    dQ = scale dS K,   dK += scale dSᵀ Q,   dc_i += Σ_j dS_ij,   dc_j −= Σ_i dS_ij,   dg = reverse cumsum(dc)
"""
from __future__ import annotations

import torch

BLOCK = 64


def _key_range(n: int, C: int, T: int, window: int | None) -> tuple[int, int, int]:
    """(query start, query end, first key) of query block n."""
    start, end = n * C, min((n + 1) * C, T)
    first = 0 if window is None else max(0, start - window + 1)
    return start, end, first


def _mask(start: int, end: int, first: int, window: int | None, seq_id, device) -> torch.Tensor:
    """Allowed (query, key) pairs of a tile ``[C, S]``: causal, in the window, in the same sequence."""
    i = torch.arange(start, end, device=device)[:, None]
    j = torch.arange(first, end, device=device)[None, :]
    allowed = j <= i
    if window is not None:
        allowed &= i - j < window
    if seq_id is not None:
        allowed &= seq_id[start:end, None] == seq_id[None, first:end]
    return allowed


def _scores(qh, kh, c, start, end, first, bias_mask, scale):
    """Scores of one tile ``[B, H, C, S]``: scale q kᵀ + c_i − c_j, −inf where not allowed."""
    s = torch.matmul(qh[:, :, start:end], kh[:, :, first:end].transpose(-1, -2)).mul_(scale)
    s += c[:, :, start:end, None] - c[:, :, None, first:end]
    return s.add_(bias_mask)


class ForgettingAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, g, scale, window, seq_id):
        cdt = torch.float64 if q.dtype == torch.float64 else torch.float32
        B, T, H, D = q.shape
        group = H // k.shape[2]
        qh = q.to(cdt).transpose(1, 2)  # [B, H, T, D]
        kh = k.to(cdt).repeat_interleave(group, dim=2).transpose(1, 2)
        vh = v.to(cdt).repeat_interleave(group, dim=2).transpose(1, 2)
        c = g.to(cdt).cumsum(1).transpose(1, 2)  # [B, H, T]
        o = vh.new_empty(B, H, T, vh.shape[-1])
        lse = c.new_empty(B, H, T)
        C = min(BLOCK, max(T, 1))
        for n in range((T + C - 1) // C):
            start, end, first = _key_range(n, C, T, window)
            bias = _neg_inf_where_not(_mask(start, end, first, window, seq_id, q.device), cdt)
            s = _scores(qh, kh, c, start, end, first, bias, scale)
            lse[:, :, start:end] = torch.logsumexp(s, -1)
            o[:, :, start:end] = torch.matmul(torch.exp(s - lse[:, :, start:end, None]), vh[:, :, first:end])
        ctx.save_for_backward(q, k, v, g, o, lse, seq_id)
        ctx.scale, ctx.window, ctx.C = scale, window, C
        return o.transpose(1, 2).to(q.dtype)

    @staticmethod
    def backward(ctx, do):
        q, k, v, g, o, lse, seq_id = ctx.saved_tensors
        scale, window, C = ctx.scale, ctx.window, ctx.C
        cdt = o.dtype
        B, T, H, D = q.shape
        Hk = k.shape[2]
        group = H // Hk
        qh = q.to(cdt).transpose(1, 2)
        kh = k.to(cdt).repeat_interleave(group, dim=2).transpose(1, 2)
        vh = v.to(cdt).repeat_interleave(group, dim=2).transpose(1, 2)
        c = g.to(cdt).cumsum(1).transpose(1, 2)
        doh = do.to(cdt).transpose(1, 2)
        delta = (doh * o).sum(-1)  # [B, H, T]: rowsum(dO ⊙ O)
        dq, dk, dv, dc = torch.zeros_like(qh), torch.zeros_like(kh), torch.zeros_like(vh), torch.zeros_like(c)
        for n in range((T + C - 1) // C):
            start, end, first = _key_range(n, C, T, window)
            bias = _neg_inf_where_not(_mask(start, end, first, window, seq_id, q.device), cdt)
            p = torch.exp(_scores(qh, kh, c, start, end, first, bias, scale) - lse[:, :, start:end, None])
            dv[:, :, first:end] += torch.matmul(p.transpose(-1, -2), doh[:, :, start:end])
            ds = torch.matmul(doh[:, :, start:end], vh[:, :, first:end].transpose(-1, -2))
            ds = p.mul_(ds.sub_(delta[:, :, start:end, None]))
            dq[:, :, start:end] = torch.matmul(ds, kh[:, :, first:end]) * scale
            dk[:, :, first:end] += torch.matmul(ds.transpose(-1, -2), qh[:, :, start:end]) * scale
            dc[:, :, start:end] += ds.sum(-1)
            dc[:, :, first:end] -= ds.sum(-2)
        dg = dc.flip(-1).cumsum(-1).flip(-1).transpose(1, 2)  # c = cumsum(g): dg_t = Σ_{s ≥ t} dc_s
        dk = dk.transpose(1, 2).reshape(B, T, Hk, group, D).sum(3)
        dv = dv.transpose(1, 2).reshape(B, T, Hk, group, -1).sum(3)
        return (dq.transpose(1, 2).to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), dg.to(g.dtype),
                None, None, None)


def _neg_inf_where_not(allowed: torch.Tensor, dtype) -> torch.Tensor:
    return torch.zeros((), dtype=dtype, device=allowed.device).masked_fill(~allowed, float("-inf"))


def forgetting_attention_torch(q, k, v, g, scale: float, window_size: int | None = None, cu_seqlens=None):
    """Blocked backend. Shapes as in :func:`recall_lm.kernels.forgetting_attn.forgetting_attention`;
    packed sequences (B = 1) are kept apart by a sequence-id mask, so no tile crosses a boundary."""
    seq_id = None
    if cu_seqlens is not None:
        tokens = torch.arange(q.shape[1], device=q.device)
        seq_id = torch.searchsorted(cu_seqlens[1:].to(torch.long), tokens, right=True)
    return ForgettingAttention.apply(q, k, v, g, scale, window_size, seq_id)
