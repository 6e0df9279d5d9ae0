"""Reference gated delta rule: the plainest loop over time, in fp64, with the transition matrix built
explicitly. For tests only."""
from __future__ import annotations

import torch


def naive_gated_delta_rule(q, k, v, beta, g=None, *, scale, initial_state=None, output_final_state=False,
                           cu_seqlens=None):
    """Loop over t: ``S_t = exp(g_t) (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T``,
    ``o_t = scale S_t^T q_t``.

    q, k ``[B, T, H, K]``, v ``[B, T, H, V]``, beta ``[B, T, H]``, g ``[B, T, H]`` / None, initial_state
    ``[N, H, K, V]``. Returns o ``[B, T, H, V]`` (q's dtype) and the final state ``[N, H, K, V]`` (fp32,
    fp64 for fp64 inputs) or None. Differentiable by autograd.
    """
    if cu_seqlens is not None:
        from recall_lm.kernels.utils import loop_over_sequences

        return loop_over_sequences(naive_gated_delta_rule, q, k, v, beta, g, scale=scale, per_token=5,
                                   initial_state=initial_state, output_final_state=output_final_state,
                                   cu_seqlens=cu_seqlens)
    B, T, H, K = q.shape
    V = v.shape[-1]
    f64 = torch.float64
    S = q.new_zeros(B, H, K, V, dtype=f64)
    if initial_state is not None:
        S = S + initial_state.to(f64)
    eye = torch.eye(K, dtype=f64, device=q.device)
    outs = []
    for t in range(T):
        q_t, k_t, v_t, b_t = q[:, t].to(f64), k[:, t].to(f64), v[:, t].to(f64), beta[:, t].to(f64)
        transition = eye - b_t[..., None, None] * k_t[..., :, None] * k_t[..., None, :]  # [B, H, K, K]
        if g is not None:
            transition = torch.exp(g[:, t].to(f64))[..., None, None] * transition
        S = transition @ S + b_t[..., None, None] * k_t[..., :, None] * v_t[..., None, :]
        outs.append(scale * (S * q_t[..., :, None]).sum(-2))
    o = torch.stack(outs, 1) if outs else q.new_zeros(B, 0, H, V, dtype=f64)
    state_dtype = f64 if q.dtype == f64 else torch.float32
    return o.to(q.dtype), (S.to(state_dtype) if output_final_state else None)
