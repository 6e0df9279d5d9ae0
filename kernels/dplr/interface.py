"""Public entry points of the DPLR delta-rule family (RWKV-7): input checks and backend dispatch."""
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
    64  # recall_lm.kernels.dplr.triton_scan.MAX_K: the key width whose chunk tiles fit shared memory
)


def _check_inputs(q, k, v, a, b, gk, initial_state, cu_seqlens, chunk_size, backend):
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    check_ndim_shape("q", q, (None, None, None, None), "[B, T, H, K]")
    B, T, H, K = q.shape
    for name, x in (("k", k), ("a", a), ("b", b), ("gk", gk)):
        check_ndim_shape(name, x, (B, T, H, K), "[B, T, H, K] (same as q)")
    check_ndim_shape("v", v, (B, T, H, None), "[B, T, H, V]")
    for name, x in (("q", q), ("k", k), ("v", v), ("a", a), ("b", b), ("gk", gk)):
        if not x.dtype.is_floating_point:
            raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if len({x.dtype for x in (q, k, v, a, b)}) != 1:
        raise ValueError(f"q, k, v, a, b must share a dtype, got {[str(x.dtype) for x in (q, k, v, a, b)]}")
    check_chunked_layout(q, v, chunk_size, cu_seqlens, initial_state)
    if any(x.device != q.device for x in (k, v, a, b, gk, initial_state) if x is not None):
        raise ValueError("q, k, v, a, b, gk, initial_state must all be on the same device")
    if backend == "triton":
        check_triton_scan_backend(q, chunk_size, TRITON_MAX_K)


@autocast_aware('q', 'k', 'v', 'a', 'b')
def dplr_delta_rule(q, k, v, a, b, gk, *, scale=None, initial_state=None, output_final_state=False,
                    cu_seqlens=None, chunk_size=64, backend="auto"):
    """The diagonal-plus-low-rank delta rule ``S_t = (diag(exp(gk_t)) + b_t a_t^T) S_{t-1} + k_t v_t^T``,
    ``o_t = scale S_t^T q_t`` (state key-major ``[K, V]``; fla's ``dplr_delta_rule`` with its alpha = a,
    beta = b). RWKV-7 uses a = −κ̂, b = κ̂ ⊙ iclr and scale 1.

    Args:
        q, k, a, b: ``[B, T, H, K]``; v ``[B, T, H, V]`` (one floating dtype); gk ``[B, T, H, K]``, a
            per-key-channel log-decay (≤ 0, not checked).
        scale: query scale, default ``K ** -0.5``.
        initial_state, output_final_state, cu_seqlens, chunk_size: as in :func:`kernels.gated_delta_rule`.
        backend: ``"auto"`` (recurrent for T = 1; triton on CUDA tensors with chunk_size ≤ 64 and
            K ≤ 64 in bf16/fp16/fp32; torch otherwise), ``"triton"`` (the chunked algorithm as Triton
            kernels, forward and backward: :mod:`recall_lm.kernels.dplr.triton_autograd`), ``"torch"``
            (chunked: per-channel decayed scores, a unit-triangular solve per chunk, a scan over chunks, a
            hand-written reverse scan), ``"recurrent"`` or ``"naive"`` (fp64 loop, for tests).

    Returns:
        o ``[B, T, H, V]`` in q's dtype, and the final state ``[N, H, K, V]`` in fp32 (fp64 for fp64
        inputs), or None unless ``output_final_state``.
    """
    _check_inputs(q, k, v, a, b, gk, initial_state, cu_seqlens, chunk_size, backend)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if backend == "auto":
        fits_triton = chunk_size <= 64 and q.shape[-1] <= TRITON_MAX_K and q.dtype != torch.float64
        backend = ("recurrent" if q.shape[1] <= 1 else
                   "triton" if q.is_cuda and triton_available_for(q) and fits_triton else "torch")
    kwargs = dict(scale=scale, initial_state=initial_state, output_final_state=output_final_state,
                  cu_seqlens=cu_seqlens)
    if backend == "triton" and q.shape[1] > 0:
        from recall_lm.kernels.dplr.triton_autograd import chunk_dplr_triton

        return chunk_dplr_triton(q, k, v, a, b, gk, chunk_size=chunk_size, **kwargs)
    if backend == "torch" and q.shape[1] > 0:
        from recall_lm.kernels.dplr.chunked_torch import chunk_dplr_torch

        return chunk_dplr_torch(q, k, v, a, b, gk, chunk_size=chunk_size, **kwargs)
    if backend in ("torch", "triton", "recurrent"):
        from recall_lm.kernels.dplr.recurrent import recurrent_dplr_delta_rule

        return recurrent_dplr_delta_rule(q, k, v, a, b, gk, **kwargs)
    from recall_lm.kernels.dplr.naive import naive_dplr_delta_rule

    return naive_dplr_delta_rule(q, k, v, a, b, gk, **kwargs)


@autocast_aware('q', 'k', 'v', 'a', 'b')
def dplr_delta_rule_step(q, k, v, a, b, gk, state=None, scale=None):
    """One decoding step of :func:`dplr_delta_rule`: q, k, a, b, gk ``[B, H, K]``, v ``[B, H, V]``, state
    ``[B, H, K, V]`` fp32 (None = zeros). Returns o ``[B, H, V]`` (q's dtype) and the new state."""
    from recall_lm.kernels.dplr.recurrent import dplr_step

    check_ndim_shape("q", q, (None, None, None), "[B, H, K]")
    B, H, K = q.shape
    for name, x in (("k", k), ("a", a), ("b", b), ("gk", gk)):
        check_ndim_shape(name, x, (B, H, K), "[B, H, K] (same as q)")
    check_ndim_shape("v", v, (B, H, None), "[B, H, V]")
    if state is not None:
        check_ndim_shape("state", state, (B, H, K, v.shape[-1]), "[B, H, K, V]")
    scale = K ** -0.5 if scale is None else float(scale)
    return dplr_step(q, k, v, a, b, gk, state, scale)
