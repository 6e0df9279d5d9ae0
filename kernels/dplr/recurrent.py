"""Token-by-token DPLR delta rule: the decoding step, and a loop over it (the second reference)."""
from __future__ import annotations

import torch

from recall_lm.kernels.utils import loop_over_sequences


def dplr_step(q, k, v, a, b, gk, state, scale):
    """One token: S ← exp(gk) ⊙ S + b (aᵀ S) + k vᵀ (rows of S decay per key channel); o = scale Sᵀq.

    q, k, a, b, gk ``[B, H, K]``, v ``[B, H, V]``, state ``[B, H, K, V]`` (fp32) or None for zeros.
    Returns o ``[B, H, V]`` (q's dtype) and the new state (fp32, fp64 for fp64 inputs).
    """
    cdt = torch.float64 if q.dtype == torch.float64 else torch.float32
    q_, k_, v_, a_, b_, g_ = (x.to(cdt) for x in (q, k, v, a, b, gk))
    S = q_.new_zeros(*q.shape, v.shape[-1]) if state is None else state.to(cdt)
    read = torch.einsum("bhk,bhkv->bhv", a_, S)  # aᵀ S_{t-1}, from the state before the decay
    S = (
        torch.exp(g_)[..., None] * S
        + b_[..., :, None] * read[..., None, :]
        + k_[..., :, None] * v_[..., None, :]
    )
    o = scale * torch.einsum("bhk,bhkv->bhv", q_, S)
    return o.to(q.dtype), S


def recurrent_dplr_delta_rule(q, k, v, a, b, gk, *, scale, initial_state=None, output_final_state=False,
                              cu_seqlens=None):
    """Loop of :func:`dplr_step` over time. Shapes as in :func:`kernels.dplr_delta_rule`."""
    if cu_seqlens is not None:
        return loop_over_sequences(recurrent_dplr_delta_rule, q, k, v, a, b, gk, scale=scale, per_token=6,
                                   initial_state=initial_state, output_final_state=output_final_state,
                                   cu_seqlens=cu_seqlens)
    B, T, H, K = q.shape
    cdt = torch.float64 if q.dtype == torch.float64 else torch.float32
    state = q.new_zeros(B, H, K, v.shape[-1], dtype=cdt) if initial_state is None else initial_state.to(cdt)
    outs = []
    for t in range(T):
        o_t, state = dplr_step(q[:, t], k[:, t], v[:, t], a[:, t], b[:, t], gk[:, t], state, scale)
        outs.append(o_t)
    o = torch.stack(outs, 1) if outs else q.new_zeros(B, 0, H, v.shape[-1])
    return o, (state if output_final_state else None)
