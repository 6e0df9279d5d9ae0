"""Public entry points of the gated delta-rule family: input checks and backend dispatch."""
from __future__ import annotations

import torch

from recall_lm.kernels.utils import (
    autocast_aware,
    check_chunked_layout,
    check_ndim_shape,
    check_triton_scan_backend,
    triton_available_for,
)

BACKENDS = ("auto", "triton", "torch", "recurrent", "naive")
TRITON_MAX_K = (
    128  # recall_lm.kernels.delta.triton_scan.MAX_K: the key width whose chunk tiles fit shared memory
)


def _check_inputs(q, k, v, beta, g, initial_state, cu_seqlens, chunk_size, backend):
    """Validate shapes, dtypes and devices; raise ValueError naming the problem."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    check_ndim_shape("q", q, (None, None, None, None), "[B, T, H, K]")
    B, T, H, K = q.shape
    check_ndim_shape("k", k, (B, T, H, K), "[B, T, H, K] (same as q)")
    check_ndim_shape("v", v, (B, T, H, None), "[B, T, H, V]")
    check_ndim_shape("beta", beta, (B, T, H), "[B, T, H] (one write strength per token and head)")
    if g is not None:
        check_ndim_shape("g", g, (B, T, H), "[B, T, H] (a per-head log-decay)")
    for name, x in (("q", q), ("k", k), ("v", v), ("beta", beta), ("g", g)):
        if x is not None and not x.dtype.is_floating_point:
            raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    check_chunked_layout(q, v, chunk_size, cu_seqlens, initial_state)
    if any(x.device != q.device for x in (k, v, beta, g, initial_state) if x is not None):
        raise ValueError("q, k, v, beta, g, initial_state must all be on the same device")
    if backend == "triton":
        check_triton_scan_backend(q, chunk_size, TRITON_MAX_K)


@autocast_aware('q', 'k', 'v')
def gated_delta_rule(q, k, v, beta, g=None, *, scale=None, initial_state=None, output_final_state=False,
                     cu_seqlens=None, chunk_size=64, backend="auto"):
    """The gated delta rule ``S_t = exp(g_t) (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T``,
    ``o_t = scale S_t^T q_t`` (state S key-major ``[K, V]``); with ``g=None`` it is DeltaNet's rule.

    The kernel does not normalise q or k (the layers do): with ‖k‖ ≤ 1 and β ∈ [0, 1] (or (0, 2) for
    negative eigenvalues) each transition is a contraction.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]`` (one floating dtype).
        beta: ``[B, T, H]`` write strength; g: ``[B, T, H]`` log-decay (<= 0, not checked) or None.
        scale: query scale, default ``K ** -0.5``.
        initial_state: ``[N, H, K, V]`` (N = B, or the number of packed sequences), or None for zeros.
        output_final_state: also return the state after the last token of each sequence.
        cu_seqlens: int ``[N+1]`` offsets of sequences packed along T (then B must be 1).
        chunk_size: chunk length of the chunked backend (a power of two in [16, 256]).
        backend: ``"auto"`` (recurrent for T = 1; triton on CUDA tensors with chunk_size ≤ 64 and K ≤ 128
            in bf16/fp16/fp32; torch otherwise), ``"triton"`` (the chunked algorithm as Triton kernels,
            forward and backward: :mod:`recall_lm.kernels.delta.triton_autograd`), ``"torch"`` (chunked, WY
            transform), ``"recurrent"`` (token by token) or ``"naive"`` (fp64 loop, for tests).

    Returns:
        o ``[B, T, H, V]`` in q's dtype, and the final state ``[N, H, K, V]`` in fp32 (fp64 for fp64
        inputs), or None unless ``output_final_state``.
    """
    _check_inputs(q, k, v, beta, g, initial_state, cu_seqlens, chunk_size, backend)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if backend == "auto":
        fits_triton = chunk_size <= 64 and q.shape[-1] <= TRITON_MAX_K and q.dtype != torch.float64
        backend = ("recurrent" if q.shape[1] == 1 else
                   "triton" if q.is_cuda and triton_available_for(q) and fits_triton else "torch")
    kwargs = dict(scale=scale, initial_state=initial_state, output_final_state=output_final_state,
                  cu_seqlens=cu_seqlens)
    if backend in ("torch", "triton") and q.shape[1] == 0:
        backend = "recurrent"  # nothing to chunk
    if backend == "triton":
        from recall_lm.kernels.delta.triton_autograd import chunk_gated_delta_rule_triton

        return chunk_gated_delta_rule_triton(q, k, v, beta, g, chunk_size=chunk_size, **kwargs)
    if backend == "torch":
        from recall_lm.kernels.delta.chunked_torch import chunk_gated_delta_rule_torch

        return chunk_gated_delta_rule_torch(q, k, v, beta, g, chunk_size=chunk_size, **kwargs)
    if backend == "recurrent":
        from recall_lm.kernels.delta.recurrent import recurrent_gated_delta_rule

        return recurrent_gated_delta_rule(q, k, v, beta, g, **kwargs)
    from recall_lm.kernels.delta.naive import naive_gated_delta_rule

    return naive_gated_delta_rule(q, k, v, beta, g, **kwargs)


@autocast_aware('q', 'k', 'v')
def gated_delta_rule_step(q, k, v, beta, g=None, state=None, scale=None):
    """One decoding step of :func:`gated_delta_rule`.

    q, k ``[B, H, K]``, v ``[B, H, V]``, beta ``[B, H]``, g ``[B, H]`` / None, state ``[B, H, K, V]``
    fp32 (None = zeros). Returns o ``[B, H, V]`` (q's dtype) and the new state.
    """
    from recall_lm.kernels.delta.recurrent import delta_rule_step

    check_ndim_shape("q", q, (None, None, None), "[B, H, K]")
    B, H, K = q.shape
    check_ndim_shape("k", k, (B, H, K), "[B, H, K] (same as q)")
    check_ndim_shape("v", v, (B, H, None), "[B, H, V]")
    check_ndim_shape("beta", beta, (B, H), "[B, H]")
    if g is not None:
        check_ndim_shape("g", g, (B, H), "[B, H]")
    if state is not None:
        check_ndim_shape("state", state, (B, H, K, v.shape[-1]), "[B, H, K, V]")
    scale = K ** -0.5 if scale is None else float(scale)
    return delta_rule_step(q, k, v, beta, g, state, scale)
