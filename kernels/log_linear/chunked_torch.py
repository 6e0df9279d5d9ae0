"""Chunked log-linear attention in PyTorch (autograd backward): the CPU path.

With chunks of C = 2^k tokens, the level partition splits in two (``levels``): keys at levels ≤ k lie in
the query's own chunk, and the levels above are whole earlier chunks, arranged as the Fenwick partition of
the chunk indices (chunk-level j = level k + j). Per chunk, with γ the in-chunk cumulative log-decay:

    intra:  O = [(q kᵀ) ⊙ exp(γ_t − γ_c) ⊙ λ_t[ℓ(t, c)]]_{c ≤ t} V         (one batched product, all chunks)
    inter:  O_t += Σ_j λ_t[k + j] (q_t e^{γ_t})ᵀ P_j                       (the scan over chunks)
    then    P_j ← e^{γ_C} P_j, and the chunk's own state U = Σ_c (k_c e^{γ_C − γ_c}) v_cᵀ joins them as a
            chunk-level-1 block, carried like a binary counter (the trailing ones of the chunk index merge)

The per-level chunk states P ``[B, H, J, K, V]`` are the O(log T) states of the paper's chunked algorithm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recall_lm.kernels.log_linear.levels import level_table, trailing_ones
from recall_lm.kernels.utils import run_padded_varlen


def _chunked(q, k, v, g, lam, scale: float, C: int):
    """q, k ``[B, T, H, K]`` (heads expanded), v ``[B, T, H, V]``, g ``[B, T, H]``, lam ``[B, T, H, L]``."""
    B, T, H, V = v.shape
    cdt = torch.float64 if v.dtype == torch.float64 else torch.float32
    NT = -(-T // C)
    pad = NT * C - T

    def chunks(x):  # [B, T, H, *] -> [B, H, NT, C, *] in the compute dtype, zero-padded
        x = F.pad(x.to(cdt), (0, 0) * (x.ndim - 2) + (0, pad)).unflatten(1, (NT, C))
        return x.permute(0, 3, 1, 2, *range(4, x.ndim))

    qc, kc, vc, gc, lc = (chunks(x) for x in (q, k, v, g, lam))
    gam = gc.cumsum(-1)  # [B, H, NT, C]
    levels = level_table(C, q.device)
    causal = levels >= 0
    # padding rows past T may name levels beyond L; real tokens never do (L ≥ num_levels(T) is checked)
    index = levels.clamp(0, lam.shape[-1] - 1).expand(B, H, NT, C, C)
    weight = torch.gather(lc, -1, index) * causal
    decay = torch.exp((gam[..., :, None] - gam[..., None, :]).masked_fill(~causal, float("-inf")))
    o = ((qc @ kc.mT) * decay * weight) @ vc  # [B, H, NT, C, V]
    k_bits, L = C.bit_length() - 1, lam.shape[-1]
    J = L - 1 - k_bits  # chunk levels the level scales cover
    if NT > 1 and J < (NT - 1).bit_length():
        raise ValueError(
            f"log-linear attention: T = {T} needs {k_bits + (NT - 1).bit_length() + 1} levels, "
            f"level_scales has {L}"
        )
    if NT > 1:
        q_dec = qc * torch.exp(gam)[..., None]
        last = gam[..., -1:]  # [B, H, NT, 1]
        k_tail = kc * torch.exp(last - gam)[..., None]
        P = qc.new_zeros(B, H, 0, qc.shape[-1], V)
        inter = []
        for n in range(NT):
            slots = P.shape[2]
            if slots:
                reads = torch.einsum("bhck,bhjkv->bhcjv", q_dec[:, :, n], P)
                inter.append(
                    torch.einsum("bhcj,bhcjv->bhcv", lc[:, :, n, :, k_bits + 1 : k_bits + 1 + slots], reads)
                )
            else:
                inter.append(torch.zeros_like(o[:, :, n]))
            if n == NT - 1:
                break
            U = k_tail[:, :, n].mT @ vc[:, :, n]  # the chunk's own state at its end
            P = P * torch.exp(last[:, :, n])[..., None, None]
            m = trailing_ones(n)
            if m >= slots:
                P = torch.cat([P, P.new_zeros(B, H, m + 1 - slots, *P.shape[3:])], 2)
            merged = U + P[:, :, :m].sum(2)
            P = torch.cat([torch.zeros_like(P[:, :, :m]), merged[:, :, None], P[:, :, m + 1 :]], 2)
        o = o + torch.stack(inter, 2)
    o = (scale * o).permute(0, 2, 3, 1, 4).reshape(B, NT * C, H, V)[:, :T]
    return o.to(v.dtype)


def log_linear_attention_chunked(
    q, k, v, g, level_scales, scale: float, cu_seqlens=None, chunk_size: int = 64, core=None
):
    """Chunked backend. Shapes as in :func:`recall_lm.kernels.log_linear.log_linear_attention`; packed
    sequences are scattered into zero-padded batches (each sequence from position 0, so its levels are
    its own; zero k, v and g add nothing). ``core(q, k, v, g, lam, scale, C)`` computes one dense batch
    with heads expanded (default: this module's PyTorch path; the Triton backend passes its own)."""
    core = _chunked if core is None else core
    group = v.shape[2] // q.shape[2]
    q, k = (x.repeat_interleave(group, 2) for x in (q, k))
    if cu_seqlens is None:
        return core(q, k, v, g, level_scales, scale, chunk_size)

    def run(padded, h0):
        o = core(*padded, scale, chunk_size)
        return o, o.new_zeros(o.shape[0], 1, 1, 1)

    o, _ = run_padded_varlen(run, cu_seqlens, (q, k, v, g, level_scales), None, chunk_size)
    return o
