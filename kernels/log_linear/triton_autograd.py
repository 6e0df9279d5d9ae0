"""Differentiable Triton log-linear attention: the kernels of ``triton_forward`` / ``triton_backward``
around the level tree of block states, built and differentiated here in PyTorch (log₂ NT small batched
steps, O(NT K V) work against the kernels' O(T (C + log NT) K V)).

Level 0 of the tree is each chunk's own state U_n; block b of level j merges its two halves,

    W_j[b] = e^{G_end(2b+1) − G_end(2b)} W_{j−1}[2b] + W_{j−1}[2b+1]

(G_end of a block: the cumulative log-decay at its last chunk's end), so its transpose sends dW_j[b] to
the left half decayed and to the right half as is. A block's gradient is the sum of what its readers
(the 2^j chunks after it, ``read_grad_kernel``'s D) send.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from recall_lm.kernels.log_linear.triton_backward import dk_dv_kernel, dq_dlam_kernel, read_grad_kernel
from recall_lm.kernels.log_linear.triton_forward import chunk_state_kernel, output_kernel
from recall_lm.kernels.utils import next_power_of_2


def gate_sums(g: torch.Tensor, C: int):
    """g ``[B, T, H]`` -> γ ``[B, T, H]`` (inclusive cumsum inside each chunk), Gs ``[B, H, NT]`` (before
    each chunk) and G_end ``[B, H, NT]`` (at each chunk's end), fp32."""
    B, T, H = g.shape
    NT = -(-T // C)
    gam = F.pad(g.float(), (0, 0, 0, NT * C - T)).view(B, NT, C, H).cumsum(2)
    G_end = gam[:, :, -1].cumsum(1).transpose(1, 2).contiguous()
    Gs = (G_end - gam[:, :, -1].transpose(1, 2)).contiguous()
    return gam.view(B, NT * C, H)[:, :T].contiguous(), Gs, G_end


def _half_decays(G_end: torch.Tensor, j: int, blocks: int) -> torch.Tensor:
    """``[B, H, blocks]``: e^{G_end(right) − G_end(left)} for the halves (level j − 1) of level-j blocks."""
    half = 1 << (j - 1)
    idx = torch.arange(blocks, device=G_end.device)
    left_end, right_end = (2 * idx + 1) * half - 1, (2 * idx + 2) * half - 1
    return torch.exp(G_end[..., right_end] - G_end[..., left_end])


def build_levels(U: torch.Tensor, G_end: torch.Tensor, J: int) -> torch.Tensor:
    """U ``[B, H, NT, K, V]`` -> the block states of levels 0 … J − 1 stacked ``[B, H, NW, K, V]``."""
    levels = [U]
    for j in range(1, J):
        prev, blocks = levels[-1], U.shape[2] >> j
        decay = _half_decays(G_end, j, blocks)[..., None, None]
        levels.append(decay * prev[:, :, 0 : 2 * blocks : 2] + prev[:, :, 1 : 2 * blocks : 2])
    return torch.cat(levels, 2)


def level_grads(D: torch.Tensor, G_end: torch.Tensor) -> torch.Tensor:
    """D ``[B, H, NT, J, K, V]`` (reader sums) -> dU ``[B, H, NT, K, V]``: each block's gradient is the
    sum of its 2^j readers' D (the chunks n with n >> j = b + 1), pushed down the tree."""
    B, H, NT, J = D.shape[:4]
    grads = []
    for j in range(J):
        size = 1 << j
        groups = -(-NT // size)
        sums = F.pad(D[:, :, :, j], (0, 0, 0, 0, 0, groups * size - NT)).unflatten(2, (groups, size)).sum(3)
        sums = F.pad(sums, (0, 0, 0, 0, 0, 1))  # group b + 1 of the last block may not exist
        grads.append(sums[:, :, 1 : (NT >> j) + 1])
    for j in range(J - 1, 0, -1):
        blocks = NT >> j
        decay = _half_decays(G_end, j, blocks)[..., None, None]
        below = grads[j - 1].clone()
        below[:, :, 0 : 2 * blocks : 2] += decay * grads[j]
        below[:, :, 1 : 2 * blocks : 2] += grads[j]
        grads[j - 1] = below
    return grads[0] if J else D.new_zeros(B, H, NT, *D.shape[4:])


def _sizes(q, v, lam, C):
    B, T, H, K = q.shape
    V, L = v.shape[-1], lam.shape[-1]
    NT = -(-T // C)
    J = (NT - 1).bit_length()
    consts = dict(H=H, K=K, V=V, C=C, LOG_C=C.bit_length() - 1, BK=max(16, next_power_of_2(K)),
                  BV=min(64, max(16, next_power_of_2(V))))
    return B, T, H, K, V, L, NT, J, consts


class LogLinearTriton(torch.autograd.Function):
    """q, k ``[B, T, H, K]`` (heads expanded), v ``[B, T, H, V]``, g ``[B, T, H]``, lam ``[B, T, H, L]``."""

    @staticmethod
    def forward(ctx, q, k, v, g, lam, scale: float, C: int):
        q, k, v, lam = (x.contiguous() for x in (q, k, v, lam))
        B, T, H, K, V, L, NT, J, c = _sizes(q, v, lam, C)
        gam, Gs, G_end = gate_sums(g, C)
        U = q.new_empty(B, H, NT, K, V, dtype=torch.float32)
        chunk_state_kernel[(-(-V // c["BV"]), NT, B * H)](k, v, gam, Gs, U, T, NT, H=H, K=K, V=V, C=C,
                                                          BK=c["BK"], BV=c["BV"])
        W = build_levels(U, G_end, J)
        NW = W.shape[2]
        W = W if NW else U.new_zeros(B, H, 1, K, V)
        o = torch.empty_like(v)
        output_kernel[(-(-V // c["BV"]), NT, B * H)](q, k, v, gam, lam, Gs, W, o, scale, T, NT, max(NW, 1),
                                                     J, L=L, **c)
        ctx.save_for_backward(q, k, v, lam, gam, Gs, G_end, W)
        ctx.scale, ctx.C, ctx.g_dtype = scale, C, g.dtype
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, lam, gam, Gs, G_end, W = ctx.saved_tensors
        B, T, H, K, V, L, NT, J, c = _sizes(q, v, lam, ctx.C)
        do = (do.float() * ctx.scale).contiguous()
        D = q.new_zeros(B, H, NT, max(J, 1), K, V, dtype=torch.float32)
        read_grad_kernel[(-(-V // c["BV"]), NT, B * H)](q, do, gam, lam, Gs, D, T, NT, max(J, 1), L=L, **c)
        dU = level_grads(D[:, :, :, :J], G_end).contiguous()
        dq = q.new_empty(B, T, H, K, dtype=torch.float32)
        dlam = q.new_zeros(B, T, H, L, dtype=torch.float32)
        dq_dlam_kernel[(NT, B * H)](q, k, v, do, gam, lam, Gs, W, dq, dlam, T, NT, W.shape[2], J, L=L, **c)
        dk = torch.empty_like(dq)
        dv = v.new_empty(B, T, H, V, dtype=torch.float32)
        dk_dv_kernel[(NT, B * H)](q, k, v, do, gam, lam, Gs, dU, dk, dv, T, NT, L=L, **c)
        dG = (q.float() * dq).sum(-1) - (k.float() * dk).sum(-1)  # o depends on G via q e^{G}, k e^{−G}
        dg = dG.flip(1).cumsum(1).flip(1)
        grads = dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), dg.to(ctx.g_dtype), dlam.to(lam.dtype)
        return *grads, None, None


def log_linear_attention_triton(q, k, v, g, level_scales, scale: float, cu_seqlens=None, chunk_size=64):
    """Triton backend. Shapes as in :func:`recall_lm.kernels.log_linear.log_linear_attention`; grouped heads
    and packed sequences as in the chunked PyTorch backend (zero-padded batches)."""
    from recall_lm.kernels.log_linear.chunked_torch import log_linear_attention_chunked

    return log_linear_attention_chunked(q, k, v, g, level_scales, scale, cu_seqlens, chunk_size,
                                        core=LogLinearTriton.apply)
