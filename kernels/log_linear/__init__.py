"""Log-linear attention (Guo et al., 2025, "Log-Linear Attention", arXiv 2506.04761), Mamba-2 form:

    o_t = scale Σ_{c ≤ t} exp(G_t − G_c) λ_t[ℓ(t, c)] (q_t·k_c) v_c,   G = cumsum(g)

with ℓ(t, c) the level of key c in query t's Fenwick partition of its prefix (``levels``) and λ_t ≥ 0
one weight per level: O(T log T) work, O(log T) states while decoding. fla's ``chunk_log_linear_attn``
computes the same (its ``naive_log_linear_attn`` is the H matrix written out).

Backends: ``triton`` (chunked kernels with a hand-written backward; the level tree of block states in
PyTorch: :mod:`recall_lm.kernels.log_linear.triton_autograd`; CUDA or ``TRITON_INTERPRET=1``), ``torch``
(chunked: intra-chunk hierarchical mask, per-level chunk states;
:mod:`recall_lm.kernels.log_linear.chunked_torch`), ``recurrent`` (the token loop on the Fenwick
states, with initial and final states), ``naive`` (fp64 reference). :func:`log_linear_attention_step`
decodes one token.
"""

from __future__ import annotations

import torch

from recall_lm.kernels.log_linear.chunked_torch import log_linear_attention_chunked
from recall_lm.kernels.log_linear.levels import num_levels
from recall_lm.kernels.log_linear.naive import log_linear_attention_naive
from recall_lm.kernels.log_linear.recurrent import log_linear_attention_recurrent, log_linear_step
from recall_lm.kernels.utils import (
    autocast_aware,
    check_cu_seqlens,
    triton_available_for,
    triton_device_error,
)

__all__ = ["log_linear_attention", "log_linear_attention_step", "num_levels"]

BACKENDS = ("auto", "triton", "torch", "recurrent", "naive")
TRITON_MAX_DIM = 128  # K and V; compiled and checked for sm_80 / sm_90 (tests/kernels/test_log_linear_aot.py)


def _triton_limits(q, v, chunk_size) -> str | None:
    """Why the Triton backend cannot take these inputs, or None."""
    if q.dtype == torch.float64:
        return "it computes in fp32 (use backend='torch' for fp64)"
    if max(q.shape[-1], v.shape[-1]) > TRITON_MAX_DIM:
        return f"K and V ≤ {TRITON_MAX_DIM}, got K {q.shape[-1]}, V {v.shape[-1]}"
    if not 16 <= chunk_size <= 64:
        return f"16 ≤ chunk_size ≤ 64, got {chunk_size}"
    return None


def _check_inputs(q, k, v, g, level_scales, cu_seqlens, chunk_size, backend) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.dtype.is_floating_point:
            raise ValueError(
                f"{name} must be a floating 4-D tensor [B, T, heads, dim], got {getattr(x, 'shape', x)}"
            )
    B, T, H, _ = v.shape
    if q.shape != k.shape or q.shape[:2] != (B, T) or q.shape[2] == 0 or H % q.shape[2]:
        raise ValueError(
            f"q and k [B, T, G, K] must match and G must divide v's heads H = {H}, got q "
            f"{tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if tuple(g.shape) != (B, T, H):
        raise ValueError(f"g must have shape [B, T, H] = {(B, T, H)}, got {tuple(g.shape)}")
    if level_scales.ndim != 4 or tuple(level_scales.shape[:3]) != (B, T, H):
        raise ValueError(f"level_scales must have shape [B, T, H, L], got {tuple(level_scales.shape)}")
    if chunk_size < 1 or chunk_size & (chunk_size - 1):
        raise ValueError(
            f"chunk_size must be a power of two (the levels are aligned blocks), got {chunk_size}"
        )
    longest = T
    if cu_seqlens is not None:
        offsets = check_cu_seqlens(cu_seqlens, B, T, q.device)
        longest = max((e - s for s, e in zip(offsets, offsets[1:])), default=0)
    if level_scales.shape[-1] < num_levels(longest):
        raise ValueError(
            f"level_scales has {level_scales.shape[-1]} levels; a sequence of {longest} tokens needs "
            f"{num_levels(longest)} (num_levels(T) = bit_length(T − 1) + 1)"
        )


@autocast_aware("q", "k", "v")
def log_linear_attention(
    q,
    k,
    v,
    g,
    level_scales,
    *,
    scale=1.0,
    initial_state=None,
    start=0,
    output_final_state=False,
    cu_seqlens=None,
    chunk_size=64,
    backend="auto",
):
    """Log-linear attention.

    Args:
        q, k: ``[B, T, G, K]``; v: ``[B, T, H, V]`` (G divides H: H / G value heads share a query/key head).
        g: ``[B, T, H]`` log-decays (≤ 0, not checked). level_scales: ``[B, T, H, L]`` λ, L ≥ num_levels(T).
        scale: default 1.0 (as fla's op; pass None for K^-1/2).
        initial_state: ``[N, H, S, K, V]`` Fenwick states (levels 1 … S) after ``start`` tokens of each
            sequence (recurrent backend); ``start``: how many tokens they hold (0 without a state).
        output_final_state: return the states after the last token (recurrent backend).
        cu_seqlens: optional ``[N + 1]`` packed-sequence offsets (B = 1).
        backend: ``"auto"`` (recurrent when a state is passed or asked for; else triton on CUDA tensors
            it fits, torch otherwise), ``"triton"``, ``"torch"``, ``"recurrent"`` or ``"naive"``.

    Returns:
        o ``[B, T, H, V]`` in v's dtype, and the final states (or None).
    """
    _check_inputs(q, k, v, g, level_scales, cu_seqlens, chunk_size, backend)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    stateful = initial_state is not None or output_final_state
    if backend == "auto":
        fits_triton = q.is_cuda and _triton_limits(q, v, chunk_size) is None
        backend = "recurrent" if stateful else "triton" if fits_triton else "torch"
    if stateful and backend != "recurrent":
        raise ValueError(
            f"initial_state / output_final_state need backend 'recurrent' or 'auto', got {backend!r}"
        )
    if backend == "recurrent":
        return log_linear_attention_recurrent(
            q, k, v, g, level_scales, scale, initial_state, output_final_state, cu_seqlens, start
        )
    if backend == "triton":
        if not triton_available_for(q):
            raise triton_device_error(q)
        why = _triton_limits(q, v, chunk_size)
        if why:
            raise ValueError(f"backend='triton' needs {why}")
        from recall_lm.kernels.log_linear.triton_autograd import log_linear_attention_triton

        return log_linear_attention_triton(q, k, v, g, level_scales, scale, cu_seqlens, chunk_size), None
    if backend == "naive":
        return log_linear_attention_naive(q, k, v, g, level_scales, scale, cu_seqlens), None
    return log_linear_attention_chunked(q, k, v, g, level_scales, scale, cu_seqlens, chunk_size), None


def log_linear_attention_step(q, k, v, g, level_scales, state, t: int, *, scale=1.0):
    """One decoding step at position t (every sequence of the batch at the same position): q, k
    ``[B, G, K]``, v ``[B, H, V]``, g ``[B, H]``, level_scales ``[B, H, L]``, state ``[B, H, S, K, V]`` fp32
    (S = 0 at t = 0). Returns o ``[B, H, V]`` (v's dtype) and the new state."""
    B, H, V = v.shape
    if (
        q.ndim != 3
        or q.shape != k.shape
        or q.shape[0] != B
        or H % q.shape[1]
        or tuple(g.shape) != (B, H)
        or level_scales.shape[:2] != (B, H)
        or state.shape[:2] != (B, H)
        or state.shape[3:] != (q.shape[2], V)
    ):
        raise ValueError(
            "step shapes: q, k [B, G, K], v [B, H, V], g [B, H], level_scales [B, H, L], "
            f"state [B, H, S, K, V]; "
            f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}, g {tuple(g.shape)}, "
            f"level_scales {tuple(level_scales.shape)}, state {tuple(state.shape)}"
        )
    group = H // q.shape[1]
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    o, state = log_linear_step(
        q.repeat_interleave(group, 1), k.repeat_interleave(group, 1), v, g, level_scales, state, t, scale
    )
    return o.to(v.dtype), state
