"""Public entry points of the gated linear-attention family: input checks and backend dispatch."""
from __future__ import annotations

import torch

from recall_lm.kernels.utils import (
    autocast_aware,
    check_chunked_layout,
    check_ndim_shape,
    triton_available_for,
    triton_device_error,
)

BACKENDS = ("auto", "triton", "torch", "recurrent", "naive")


def _check_inputs(q, k, v, g, u, initial_state, cu_seqlens, chunk_size, backend):
    """Validate shapes; returns the packed-sequence offsets (list) or None."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    check_ndim_shape("q", q, (None, None, None, None), "[B, T, H, K]")
    B, T, H, K = q.shape
    check_ndim_shape("k", k, (B, T, H, K), "[B, T, H, K] (same as q)")
    check_ndim_shape("v", v, (B, T, H, None), "[B, T, H, V]")
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not x.dtype.is_floating_point:
            raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if g is not None:
        if not isinstance(g, torch.Tensor) or tuple(g.shape) not in ((B, T, H), (B, T, H, K)):
            got = tuple(g.shape) if isinstance(g, torch.Tensor) else type(g).__name__
            raise ValueError(f"g must be a log-decay of shape [B, T, H] = {(B, T, H)} (per head) or "
                             f"[B, T, H, K] = {(B, T, H, K)} (per key channel), got {got}")
    if u is not None:
        check_ndim_shape("u", u, (H, K), "[H, K]")
    offsets = check_chunked_layout(q, v, chunk_size, cu_seqlens, initial_state)
    tensors = [x for x in (q, k, v, g, u, initial_state) if x is not None]
    if any(x.device != q.device for x in tensors):
        raise ValueError("q, k, v, g, u, initial_state must all be on the same device")
    return offsets


def _resolve_backend(backend: str, q: torch.Tensor, chunk_size: int) -> str:
    if backend == "auto":
        if q.shape[1] == 1:  # one decoding step: the token update, not a chunk padded to chunk_size
            return "recurrent"
        return "triton" if q.is_cuda and triton_available_for(q) and chunk_size <= 64 else "torch"
    if backend == "triton":
        if not triton_available_for(q):
            raise triton_device_error(q)
        if chunk_size > 64:
            raise ValueError(f"backend='triton' supports chunk_size 16, 32 or 64, got {chunk_size}")
    return backend


@autocast_aware('q', 'k', 'v')
def gated_linear_attention(q, k, v, g=None, u=None, *, scale=None, initial_state=None,
                           output_final_state=False, cu_seqlens=None, chunk_size=64, backend="auto"):
    """Gated linear attention ``S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t``, ``o_t = scale q_t S_t``.

    With ``u`` (RWKV-6 bonus): ``o_t = scale (q_t S_{t-1} + (q_t * u * k_t) v_t)``, same state update.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]`` (one floating dtype).
        g: log-decay (<= 0, not checked) ``[B, T, H]`` per head, ``[B, T, H, K]`` per key channel, or None.
        u: ``[H, K]`` bonus for the current token, or None.
        scale: query scale, default ``K ** -0.5``.
        initial_state: ``[N, H, K, V]`` (N = B, or the number of packed sequences), or None for zeros.
        output_final_state: also return the state after the last token of each sequence.
        cu_seqlens: int ``[N+1]`` offsets of sequences packed along T (then B must be 1).
        chunk_size: chunk length of the chunked backends (power of two; Triton: 16, 32 or 64).
        backend: ``"auto"`` (recurrent for T = 1; Triton on CUDA tensors when chunk_size <= 64; torch
            otherwise), ``"triton"``,
            ``"torch"``, ``"recurrent"`` or ``"naive"`` (fp64 loop, for tests).

    Returns:
        o ``[B, T, H, V]`` in q's dtype, and the final state ``[N, H, K, V]`` in fp32 (fp64 for fp64
        inputs), or None unless ``output_final_state``.
    """
    _check_inputs(q, k, v, g, u, initial_state, cu_seqlens, chunk_size, backend)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    backend = _resolve_backend(backend, q, chunk_size)
    if backend == "triton" and q.shape[1] == 0:
        backend = "torch"  # nothing to launch: o is empty and the final state is the initial one
    kwargs = dict(scale=scale, initial_state=initial_state, output_final_state=output_final_state,
                  cu_seqlens=cu_seqlens)
    if backend == "torch":
        from recall_lm.kernels.gla.chunked_torch import chunk_gla_torch

        return chunk_gla_torch(q, k, v, g, u, chunk_size=chunk_size, **kwargs)
    if backend == "triton":
        from recall_lm.kernels.gla.triton_autograd import chunk_gla_triton

        return chunk_gla_triton(q, k, v, g, u, chunk_size=chunk_size, **kwargs)
    if backend == "recurrent":
        from recall_lm.kernels.gla.recurrent import recurrent_gla

        return recurrent_gla(q, k, v, g, u, **kwargs)
    from recall_lm.kernels.gla.naive import naive_gla

    return naive_gla(q, k, v, g, u, **kwargs)


@autocast_aware('q', 'k', 'v')
def gated_linear_attention_step(q, k, v, g=None, u=None, state=None, scale=None):
    """One decoding step of :func:`gated_linear_attention`.

    q, k ``[B, H, K]``, v ``[B, H, V]``, g ``[B, H]`` / ``[B, H, K]`` / None, u ``[H, K]`` / None,
    state ``[B, H, K, V]`` fp32 (None = zeros). Returns o ``[B, H, V]`` (q's dtype) and the new state.
    """
    from recall_lm.kernels.gla.recurrent import gla_step

    check_ndim_shape("q", q, (None, None, None), "[B, H, K]")
    B, H, K = q.shape
    check_ndim_shape("k", k, (B, H, K), "[B, H, K] (same as q)")
    check_ndim_shape("v", v, (B, H, None), "[B, H, V]")
    if g is not None and (not isinstance(g, torch.Tensor) or tuple(g.shape) not in ((B, H), (B, H, K))):
        got = tuple(g.shape) if isinstance(g, torch.Tensor) else type(g).__name__
        raise ValueError(f"g must have shape [B, H] = {(B, H)} or [B, H, K] = {(B, H, K)}, got {got}")
    if u is not None:
        check_ndim_shape("u", u, (H, K), "[H, K]")
    if state is not None:
        check_ndim_shape("state", state, (B, H, K, v.shape[-1]), "[B, H, K, V]")
    scale = K ** -0.5 if scale is None else float(scale)
    return gla_step(q, k, v, g, u, state, scale)
