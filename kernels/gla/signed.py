"""Gated linear attention with a signed per-head transition, a_t ∈ [−1, 1]: the extended eigenvalue range
of Grazzi et al. (ICLR 2025, "Unlocking State-Tracking in Linear RNNs Through Negative Eigenvalues") for
diagonal models such as Mamba-2.

    S_t = a_t S_{t−1} + k_t v_tᵀ,   o_t = scale · S_tᵀ q_t        (per head; S key-major [K, V])

Exact on every backend of :func:`recall_lm.kernels.gla.gated_linear_attention`: write a_t = s_t |a_t| with
s_t = ±1 and σ_t = s_1 ⋯ s_t (per sequence). Since σ_t σ_j = s_{j+1} ⋯ s_t, every product of transitions
between j and t is σ_t σ_j exp(G_t − G_j) with G the cumulative log|a|, so the op run with g = log|a| on
q̃_t = σ_t q_t and k̃_t = σ_t k_t gives the outputs, and its state S̃_t = σ_t S_t. The signs are constants
of the input, so every gradient (a's through log|a|: d log|a| / da = 1/a) is the loop's.
"""

from __future__ import annotations

import torch

from recall_lm.kernels.gla.interface import gated_linear_attention
from recall_lm.kernels.utils import autocast_aware, check_ndim_shape

TINY = 1e-30  # |a| is floored here: a transition of exactly 0 would give log 0


def _cumulative_signs(a: torch.Tensor, cu_seqlens: torch.Tensor | None) -> torch.Tensor:
    """σ [B, T, H] = the product of sign(a) (0 counts as +) over each sequence's tokens so far."""
    negative = (a < 0).to(torch.int64)
    counts = negative.cumsum(1)
    if cu_seqlens is not None:  # restart at each packed sequence: subtract the count before its start
        starts = cu_seqlens[:-1].long()
        before = torch.cat([counts.new_zeros(*counts.shape[:1], 1, counts.shape[2]), counts], 1)[:, starts]
        lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
        counts = counts - torch.repeat_interleave(before, lengths, dim=1)
    return 1.0 - 2.0 * (counts % 2).to(a.dtype)


@autocast_aware("q", "k", "v")
def signed_gated_linear_attention(
    q,
    k,
    v,
    a,
    *,
    scale=None,
    initial_state=None,
    output_final_state=False,
    cu_seqlens=None,
    chunk_size=64,
    backend="auto",
):
    """``S_t = a_t S_{t−1} + k_t v_tᵀ``, ``o_t = scale S_tᵀ q_t`` with a_t ∈ [−1, 1] per token and head.

    Args:
        q, k: ``[B, T, H, K]``; v ``[B, T, H, V]``; a: ``[B, T, H]`` the transition itself (not its log).
        scale, initial_state, output_final_state, cu_seqlens, chunk_size, backend: as in
            :func:`recall_lm.kernels.ops.gated_linear_attention` (``"naive"``: this recurrence as a plain
            fp64 loop).
    Returns:
        o ``[B, T, H, V]`` in q's dtype; the final state ``[N, H, K, V]`` (fp32, fp64 for fp64 inputs) or
        None.
    """
    check_ndim_shape("q", q, (None, None, None, None), "[B, T, H, K]")
    check_ndim_shape("a", a, q.shape[:3], "[B, T, H] (one transition per token and head)")
    if backend == "naive":
        return _naive(
            q,
            k,
            v,
            a,
            scale=q.shape[-1] ** -0.5 if scale is None else float(scale),
            initial_state=initial_state,
            output_final_state=output_final_state,
            cu_seqlens=cu_seqlens,
        )
    f32 = torch.promote_types(a.dtype, torch.float32)
    a = a.to(f32)
    sigma = _cumulative_signs(a, cu_seqlens)
    g = torch.log(a.abs().clamp_min(TINY))
    flip = sigma[..., None].to(q.dtype)
    o, final = gated_linear_attention(
        q * flip,
        k * flip,
        v,
        g,
        scale=scale,
        initial_state=initial_state,
        output_final_state=output_final_state,
        cu_seqlens=cu_seqlens,
        chunk_size=chunk_size,
        backend=backend,
    )
    if final is not None:
        last = sigma[:, -1] if cu_seqlens is None else sigma[0, (cu_seqlens[1:] - 1).clamp_min(0).long()]
        if cu_seqlens is not None:  # an empty sequence keeps its initial state: its sign is +
            last = torch.where((cu_seqlens[1:] > cu_seqlens[:-1])[:, None], last, torch.ones_like(last))
        final = final * last[..., None, None].to(final.dtype)
    return o, final


@autocast_aware("q", "k", "v")
def signed_gated_linear_attention_step(q, k, v, a, state=None, scale=None):
    """One decoding step: q, k ``[B, H, K]``, v ``[B, H, V]``, a ``[B, H]``, state ``[B, H, K, V]`` fp32
    (None = zeros). Returns o ``[B, H, V]`` (q's dtype) and the new state."""
    check_ndim_shape("q", q, (None, None, None), "[B, H, K]")
    check_ndim_shape("a", a, q.shape[:2], "[B, H]")
    cdt = torch.float64 if q.dtype == torch.float64 else torch.float32
    S = q.new_zeros(*q.shape, v.shape[-1], dtype=cdt) if state is None else state.to(cdt)
    S = a.to(cdt)[..., None, None] * S + k.to(cdt)[..., :, None] * v.to(cdt)[..., None, :]
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    return (scale * torch.einsum("bhk,bhkv->bhv", q.to(cdt), S)).to(q.dtype), S


def _naive(q, k, v, a, *, scale, initial_state=None, output_final_state=False, cu_seqlens=None):
    """The recurrence as a plain fp64 loop (the tests' reference)."""
    if cu_seqlens is not None:
        from recall_lm.kernels.utils import loop_over_sequences

        return loop_over_sequences(
            _naive,
            q,
            k,
            v,
            a,
            scale=scale,
            initial_state=initial_state,
            output_final_state=output_final_state,
            cu_seqlens=cu_seqlens,
        )
    B, T, H, K = q.shape
    f64 = torch.float64
    S = q.new_zeros(B, H, K, v.shape[-1], dtype=f64) + (0 if initial_state is None else initial_state.to(f64))
    outs = []
    for t in range(T):
        S = (
            a[:, t].to(f64)[..., None, None] * S
            + k[:, t].to(f64)[..., :, None] * v[:, t].to(f64)[..., None, :]
        )
        outs.append(scale * torch.einsum("bhk,bhkv->bhv", q[:, t].to(f64), S))
    o = torch.stack(outs, 1) if outs else q.new_zeros(B, 0, H, v.shape[-1], dtype=f64)
    return o.to(q.dtype), (S.to(f64 if q.dtype == f64 else torch.float32) if output_final_state else None)
