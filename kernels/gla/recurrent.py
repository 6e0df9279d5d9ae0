"""Token-by-token gated linear attention: the decoding step, and a loop over it."""
from __future__ import annotations

import torch

from recall_lm.kernels.utils import loop_over_sequences


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def gla_step(q, k, v, g, u, state, scale):
    """One token. q, k ``[B, H, K]``, v ``[B, H, V]``, g ``[B, H]`` / ``[B, H, K]`` / None,
    u ``[H, K]`` / None, state ``[B, H, K, V]`` (fp32) or None for zeros. Returns o ``[B, H, V]`` (q's
    dtype), new state (fp32).
    """
    cdt = _compute_dtype(q.dtype)
    q_, k_, v_ = q.to(cdt), k.to(cdt), v.to(cdt)
    if state is None:
        state = q_.new_zeros(*q.shape, v.shape[-1])
    S = state.to(cdt)
    if g is not None:
        decay = torch.exp(g.to(cdt))
        decayed = S * (decay[..., None, None] if g.ndim == 2 else decay[..., :, None])
    else:
        decayed = S
    kv = k_[..., :, None] * v_[..., None, :]
    new_state = decayed + kv
    if u is None:
        o = torch.einsum("bhk,bhkv->bhv", q_, new_state)
    else:
        bonus = (q_ * u.to(cdt) * k_).sum(-1, keepdim=True) * v_
        o = torch.einsum("bhk,bhkv->bhv", q_, S) + bonus
    return (scale * o).to(q.dtype), new_state.to(_compute_dtype(state.dtype))


def recurrent_gla(q, k, v, g=None, u=None, *, scale, initial_state=None, output_final_state=False,
                  cu_seqlens=None):
    """Loop of :func:`gla_step` over time. Shapes as in :func:`kernels.gated_linear_attention`."""
    if cu_seqlens is not None:
        return loop_over_sequences(recurrent_gla, q, k, v, g, u, scale=scale, initial_state=initial_state,
                                   output_final_state=output_final_state, cu_seqlens=cu_seqlens)

    B, T, H, K = q.shape
    cdt = _compute_dtype(q.dtype)
    state = q.new_zeros(B, H, K, v.shape[-1], dtype=cdt) if initial_state is None else initial_state.to(cdt)
    outs = []
    for t in range(T):
        o_t, state = gla_step(q[:, t], k[:, t], v[:, t], None if g is None else g[:, t], u, state, scale)
        outs.append(o_t)
    o = torch.stack(outs, 1) if outs else q.new_zeros(B, 0, H, v.shape[-1])
    return o, (state if output_final_state else None)
