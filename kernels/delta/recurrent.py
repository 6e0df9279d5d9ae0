"""Token-by-token gated delta rule: the decoding step, and a loop over it (the second reference)."""
from __future__ import annotations

import torch

from recall_lm.kernels.utils import loop_over_sequences


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def delta_rule_step(q, k, v, beta, g, state, scale):
    """One token as a rank-one correction: S ← αS, then S ← S + β k (v − Sᵀk)ᵀ; o = scale Sᵀq.

    q, k ``[B, H, K]``, v ``[B, H, V]``, beta ``[B, H]``, g ``[B, H]`` / None, state ``[B, H, K, V]``
    (fp32) or None for zeros. Returns o ``[B, H, V]`` (q's dtype) and the new state (fp32).
    """
    cdt = _compute_dtype(q.dtype)
    q_, k_, v_, b_ = q.to(cdt), k.to(cdt), v.to(cdt), beta.to(cdt)
    S = q_.new_zeros(*q.shape, v.shape[-1]) if state is None else state.to(cdt)
    if g is not None:
        S = torch.exp(g.to(cdt))[..., None, None] * S
    error = v_ - torch.einsum("bhk,bhkv->bhv", k_, S)  # what S recalls for k, subtracted from v
    S = S + (b_[..., None] * k_)[..., :, None] * error[..., None, :]
    o = scale * torch.einsum("bhk,bhkv->bhv", q_, S)
    return o.to(q.dtype), S.to(torch.float64 if cdt == torch.float64 else torch.float32)


def recurrent_gated_delta_rule(q, k, v, beta, g=None, *, scale, initial_state=None, output_final_state=False,
                               cu_seqlens=None):
    """Loop of :func:`delta_rule_step` over time. Shapes as in :func:`kernels.gated_delta_rule`."""
    if cu_seqlens is not None:
        return loop_over_sequences(recurrent_gated_delta_rule, q, k, v, beta, g, scale=scale, per_token=5,
                                   initial_state=initial_state, output_final_state=output_final_state,
                                   cu_seqlens=cu_seqlens)
    B, T, H, K = q.shape
    cdt = _compute_dtype(q.dtype)
    state = q.new_zeros(B, H, K, v.shape[-1], dtype=cdt) if initial_state is None else initial_state.to(cdt)
    outs = []
    for t in range(T):
        o_t, state = delta_rule_step(q[:, t], k[:, t], v[:, t], beta[:, t], None if g is None else g[:, t],
                                     state, scale)
        outs.append(o_t)
    o = torch.stack(outs, 1) if outs else q.new_zeros(B, 0, H, v.shape[-1])
    return o, (state if output_final_state else None)
