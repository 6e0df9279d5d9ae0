"""Reference gated linear attention: the plainest loop over time, in fp64. For tests only."""
from __future__ import annotations

import torch

from recall_lm.kernels.utils import loop_over_sequences


def naive_gla(q, k, v, g=None, u=None, *, scale, initial_state=None, output_final_state=False,
              cu_seqlens=None):
    """Loop over t: ``S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t``, ``o_t = scale q_t S_t``.

    With ``u``: ``o_t = scale (q_t S_{t-1} + (q_t * u * k_t) v_t)``, same state update.
    q, k ``[B, T, H, K]``, v ``[B, T, H, V]``, g ``[B, T, H]`` / ``[B, T, H, K]`` / None, u ``[H, K]`` / None,
    initial_state ``[N, H, K, V]``. Returns o ``[B, T, H, V]`` (q's dtype) and the final state
    ``[N, H, K, V]`` (fp32, fp64 for fp64 inputs) or None. Differentiable by autograd.
    """
    if cu_seqlens is not None:
        return loop_over_sequences(naive_gla, q, k, v, g, u, scale=scale, initial_state=initial_state,
                                   output_final_state=output_final_state, cu_seqlens=cu_seqlens)

    B, T, H, K = q.shape
    V = v.shape[-1]
    f64 = torch.float64
    S = q.new_zeros(B, H, K, V, dtype=f64)
    if initial_state is not None:
        S = S + initial_state.to(f64)
    outs = []
    for t in range(T):
        q_t, k_t, v_t = q[:, t].to(f64), k[:, t].to(f64), v[:, t].to(f64)  # [B, H, K], [B, H, V]
        kv = k_t[..., :, None] * v_t[..., None, :]
        decay = None
        if g is not None:
            g_t = g[:, t].to(f64)
            decay = torch.exp(g_t)[..., None, None] if g_t.ndim == 2 else torch.exp(g_t)[..., :, None]
        if u is None:
            S = (S if decay is None else decay * S) + kv
            o_t = scale * (q_t[..., :, None] * S).sum(-2)
        else:
            bonus = (q_t * u.to(f64) * k_t).sum(-1, keepdim=True) * v_t
            o_t = scale * ((q_t[..., :, None] * S).sum(-2) + bonus)
            S = (S if decay is None else decay * S) + kv
        outs.append(o_t)
    o = torch.stack(outs, 1) if outs else q.new_zeros(B, 0, H, V, dtype=f64)
    state_dtype = f64 if q.dtype == f64 else torch.float32
    return o.to(q.dtype), (S.to(state_dtype) if output_final_state else None)
