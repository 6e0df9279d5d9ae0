"""Kimi Delta Attention's op (Kimi Linear, 2025) as a special case of the DPLR delta rule.

KDA's state update, per head, is the delta rule after a per-key-channel decay:

    S_t = (I − β_t k_t k_tᵀ) Diag(α_t) S_{t−1} + β_t k_t v_tᵀ,   o_t = scale · S_tᵀ q_t,   α_t = exp(gk_t)

Expanding the product, the transition is ``Diag(α_t) − β_t k_t (α_t ⊙ k_t)ᵀ``: the DPLR transition
``Diag(exp(gk)) + b aᵀ`` with a = α ⊙ k and b = −β k, and the written key β k. Every backend of
:func:`recall_lm.kernels.dplr.dplr_delta_rule` (chunked torch, Triton, token loop) therefore runs KDA;
the gradient of gk reaches both the decay and a = exp(gk) ⊙ k through autograd. On CPU KDA has its own
chunked path (:mod:`recall_lm.kernels.dplr.kda_chunked`: two per-channel score matrices instead of the
DPLR path's four, one state update per chunk instead of two), the default there; ``backend="dplr_torch"``
keeps the DPLR one. ``backend="naive"`` is the KDA loop above in fp64, written independently of the DPLR
code (the reference of the tests).
"""

from __future__ import annotations

import torch

from recall_lm.kernels.dplr.interface import (
    TRITON_MAX_K,
    _check_inputs,
    dplr_delta_rule,
    dplr_delta_rule_step,
)
from recall_lm.kernels.utils import autocast_aware, check_ndim_shape, triton_available_for

BACKENDS = ("auto", "torch", "dplr_torch", "triton", "recurrent", "naive")


def _as_dplr(k, beta, gk):
    """KDA's (k, β, gk) as DPLR's written key, a and b (in k's dtype)."""
    written = beta[..., None].to(k.dtype) * k
    a = (torch.exp(gk.to(torch.promote_types(gk.dtype, torch.float32))) * k).to(k.dtype)
    return written, a, -written


@autocast_aware("q", "k", "v")
def kda_delta_rule(
    q,
    k,
    v,
    beta,
    gk,
    *,
    scale=None,
    initial_state=None,
    output_final_state=False,
    cu_seqlens=None,
    chunk_size=64,
    backend="auto",
):
    """KDA: ``S_t = (I − β_t k_t k_tᵀ) Diag(exp(gk_t)) S_{t−1} + β_t k_t v_tᵀ``, ``o_t = scale S_tᵀ q_t``
    (state key-major ``[K, V]``; fla's ``chunk_kda`` keeps it value-major, with its gate, L2 norm and
    sigmoid of β computed outside this op).

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]`` (one floating dtype).
        beta: ``[B, T, H]`` write strength (in (0, 1], or (0, 2) for negative eigenvalues).
        gk: ``[B, T, H, K]`` per-key-channel log-decay (≤ 0, not checked).
        scale, initial_state, output_final_state, cu_seqlens, chunk_size: as in
            :func:`recall_lm.kernels.ops.gated_delta_rule`.
        backend: ``"auto"`` (recurrent for T = 1, DPLR's triton where :func:`dplr_delta_rule` picks it,
            else ``"torch"``), ``"torch"`` (KDA's own chunked path,
            :mod:`recall_lm.kernels.dplr.kda_chunked`), ``"dplr_torch"`` (DPLR's chunked path),
            ``"triton"``, ``"recurrent"`` (DPLR's, see :func:`recall_lm.kernels.ops.dplr_delta_rule`)
            or ``"naive"`` (the KDA loop in fp64).

    Returns:
        o ``[B, T, H, V]`` in q's dtype, and the final state ``[N, H, K, V]`` in fp32 (fp64 for fp64
        inputs), or None unless ``output_final_state``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    check_ndim_shape("q", q, (None, None, None, None), "[B, T, H, K]")
    B, T, H, K = q.shape
    check_ndim_shape("beta", beta, (B, T, H), "[B, T, H] (one write strength per token and head)")
    check_ndim_shape("gk", gk, (B, T, H, K), "[B, T, H, K] (a per-key-channel log-decay)")
    if backend == "naive":
        check_ndim_shape("k", k, (B, T, H, K), "[B, T, H, K] (same as q)")
        check_ndim_shape("v", v, (B, T, H, None), "[B, T, H, V]")
        return naive_kda_delta_rule(
            q,
            k,
            v,
            beta,
            gk,
            scale=K**-0.5 if scale is None else float(scale),
            initial_state=initial_state,
            output_final_state=output_final_state,
            cu_seqlens=cu_seqlens,
        )
    if backend in ("auto", "torch") and T > 1:
        _check_inputs(q, k, v, k, k, gk, initial_state, cu_seqlens, chunk_size, "torch")
        fits_triton = chunk_size <= 64 and K <= TRITON_MAX_K and q.dtype != torch.float64
        if backend == "torch" or not (q.is_cuda and triton_available_for(q) and fits_triton):
            from recall_lm.kernels.dplr.kda_chunked import chunk_kda_torch

            return chunk_kda_torch(
                q, k, v, beta, gk, scale=K**-0.5 if scale is None else float(scale),
                initial_state=initial_state, output_final_state=output_final_state, cu_seqlens=cu_seqlens,
                chunk_size=chunk_size)
    written, a, b = _as_dplr(k, beta, gk)
    return dplr_delta_rule(
        q,
        written,
        v,
        a,
        b,
        gk,
        scale=scale,
        initial_state=initial_state,
        output_final_state=output_final_state,
        cu_seqlens=cu_seqlens,
        chunk_size=chunk_size,
        backend="torch" if backend == "dplr_torch" else backend,
    )


@autocast_aware("q", "k", "v")
def kda_delta_rule_step(q, k, v, beta, gk, state=None, scale=None):
    """One decoding step of :func:`kda_delta_rule`: q, k, gk ``[B, H, K]``, v ``[B, H, V]``, beta ``[B, H]``,
    state ``[B, H, K, V]`` fp32 (None = zeros). Returns o ``[B, H, V]`` (q's dtype) and the new state."""
    check_ndim_shape("q", q, (None, None, None), "[B, H, K]")
    check_ndim_shape("beta", beta, q.shape[:2], "[B, H]")
    written, a, b = _as_dplr(k, beta, gk)
    return dplr_delta_rule_step(q, written, v, a, b, gk, state, scale)


def naive_kda_delta_rule(
    q, k, v, beta, gk, *, scale, initial_state=None, output_final_state=False, cu_seqlens=None
):
    """The KDA loop in fp64 as the paper writes it (decay, then the delta-rule write). Shapes as in
    :func:`kda_delta_rule`. For tests."""
    if cu_seqlens is not None:
        from recall_lm.kernels.utils import loop_over_sequences

        return loop_over_sequences(
            naive_kda_delta_rule,
            q,
            k,
            v,
            beta,
            gk,
            scale=scale,
            per_token=5,
            initial_state=initial_state,
            output_final_state=output_final_state,
            cu_seqlens=cu_seqlens,
        )
    B, T, H, K = q.shape
    f64 = torch.float64
    S = q.new_zeros(B, H, K, v.shape[-1], dtype=f64)
    if initial_state is not None:
        S = S + initial_state.to(f64)
    eye = torch.eye(K, dtype=f64, device=q.device)
    outs = []
    for t in range(T):
        q_t, k_t, v_t, b_t, g_t = (x[:, t].to(f64) for x in (q, k, v, beta, gk))
        householder = eye - b_t[..., None, None] * k_t[..., :, None] * k_t[..., None, :]
        written = (b_t[..., None] * k_t)[..., :, None] * v_t[..., None, :]
        S = householder @ (torch.exp(g_t)[..., None] * S) + written
        outs.append(scale * torch.einsum("bhk,bhkv->bhv", q_t, S))
    o = torch.stack(outs, 1) if outs else q.new_zeros(B, 0, H, v.shape[-1], dtype=f64)
    return o.to(q.dtype), (S.to(f64 if q.dtype == f64 else torch.float32) if output_final_state else None)
