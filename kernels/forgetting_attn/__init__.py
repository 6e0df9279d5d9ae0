"""Forgetting attention (Lin et al., ICLR 2025, "Forgetting Transformer: Softmax Attention with a Forget
Gate"): causal softmax attention whose scores carry the cumulative log forget gate,

    o_i = Σ_{j ≤ i} softmax_j(scale q_i·k_j + c_i − c_j) v_j,   c_t = Σ_{l ≤ t} g_l,   g_t = log f_t ≤ 0.

Backends: ``triton`` (the sliding-window attention's flash-attention kernels with the gate's bias and
its gradient: :mod:`recall_lm.kernels.forgetting_attn.triton_autograd`; CUDA or ``TRITON_INTERPRET=1``),
``torch`` (query blocks over the visible keys with a hand-written blocked backward; never a T × T tensor:
:mod:`recall_lm.kernels.forgetting_attn.blocked_torch`), ``naive`` (fp64 full-mask reference for
tests). ``auto`` picks triton on CUDA tensors it fits and torch otherwise.
:func:`forgetting_attention_step` decodes one token on a key/value cache.
"""
from __future__ import annotations

import torch

from recall_lm.kernels.forgetting_attn.blocked_torch import forgetting_attention_torch
from recall_lm.kernels.forgetting_attn.naive import forgetting_attention_naive
from recall_lm.kernels.utils import autocast_aware, check_cu_seqlens, interpreter_enabled, triton_device_error

__all__ = ["forgetting_attention", "forgetting_attention_step"]

BACKENDS = ("auto", "triton", "torch", "naive")
TRITON_MAX_HEAD_DIM = 128  # the sliding-window kernels' limit (compiled and checked for sm_80 / sm_90)
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_inputs(q, k, v, g, window_size, cu_seqlens) -> None:
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise ValueError(f"{name} must be a 4-D tensor [B, T, H, D], got {getattr(x, 'shape', type(x))}")
        if x.dtype not in FLOAT_DTYPES:
            raise ValueError(f"{name} must be fp16, bf16, fp32 or fp64, got {x.dtype}")
    B, T, H, D = q.shape
    if k.shape[:2] != (B, T) or k.shape[3] != D or v.shape[:3] != k.shape[:3]:
        raise ValueError(f"k [B, T, Hk, D] and v [B, T, Hk, Dv] must match q {tuple(q.shape)}, got "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)}")
    if k.shape[2] == 0 or H % k.shape[2] != 0:
        raise ValueError(f"k/v heads ({k.shape[2]}) must divide q heads ({H})")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not isinstance(g, torch.Tensor) or tuple(g.shape) != (B, T, H) or not g.dtype.is_floating_point:
        raise ValueError(f"g must be a floating [B, T, H] = {(B, T, H)} log forget gate, got "
                         f"{getattr(g, 'shape', type(g))}")
    if any(x.device != q.device for x in (k, v, g)):
        raise ValueError("q, k, v, g must be on one device")
    if window_size is not None and (isinstance(window_size, bool) or not isinstance(window_size, int)
                                    or window_size < 1):
        raise ValueError(f"window_size must be None or an int >= 1, got {window_size!r}")
    if cu_seqlens is not None:
        check_cu_seqlens(cu_seqlens, B, T, q.device)


@autocast_aware("q", "k", "v")
def forgetting_attention(q, k, v, g, *, scale=None, window_size=None, cu_seqlens=None, backend="auto"):
    """Forgetting attention (fla's ``parallel_forgetting_attn`` with the same arguments).

    Args:
        q: ``[B, T, H, D]``; k: ``[B, T, Hk, D]``; v: ``[B, T, Hk, Dv]`` (Hk divides H: query head h
            reads kv head h // (H / Hk)), one floating dtype.
        g: ``[B, T, H]`` log forget gates (≤ 0, not checked), one per query head.
        scale: default ``D ** -0.5``. window_size: keys limited to ``[i − window_size + 1, i]``.
        cu_seqlens: optional ``[N + 1]`` packed-sequence offsets (B = 1).
        backend: ``"auto"`` (triton on CUDA when D = Dv ≤ 128 and the dtype is not fp64, else torch),
            ``"triton"``, ``"torch"`` or ``"naive"``.

    Returns:
        o ``[B, T, H, Dv]`` in q's dtype (computed in fp32, fp64 for fp64 inputs).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    _check_inputs(q, k, v, g, window_size, cu_seqlens)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if q.shape[0] * q.shape[1] == 0:
        return q.new_zeros(*q.shape[:3], v.shape[-1]) + (k.sum() + v.sum() + g.sum()) * 0
    fits_triton = q.shape[-1] == v.shape[-1] <= TRITON_MAX_HEAD_DIM and q.dtype != torch.float64
    if backend == "auto":
        backend = "triton" if q.is_cuda and fits_triton else "torch"
    if backend == "triton":
        if not fits_triton:
            raise ValueError(f"backend='triton' needs D = Dv ≤ {TRITON_MAX_HEAD_DIM} and fp16/bf16/fp32 "
                             f"inputs, got D {q.shape[-1]}, Dv {v.shape[-1]}, {q.dtype}")
        if not (q.is_cuda or (q.device.type == "cpu" and interpreter_enabled())):
            raise triton_device_error(q)
        from recall_lm.kernels.forgetting_attn.triton_autograd import forgetting_attention_triton

        return forgetting_attention_triton(q, k, v, g, scale, window_size, cu_seqlens)
    if backend == "naive":
        return forgetting_attention_naive(q, k, v, g, scale, window_size, cu_seqlens)
    return forgetting_attention_torch(q, k, v, g, scale, window_size, cu_seqlens)


def forgetting_attention_step(q, k, v, g, cache=None, *, scale=None, window_size=None):
    """One decoding step: q ``[B, H, D]``, k ``[B, Hk, D]``, v ``[B, Hk, Dv]``, g ``[B, H]``; ``cache`` the
    previous ``(keys [B, L, Hk, D], values [B, L, Hk, Dv], bias [B, L, H])`` or None, where bias_j =
    c_{t−1} − c_j (fp32, ≤ 0) is kept relative to the newest token, so no cumulative sum grows with the
    length and no difference of two large numbers is taken. Returns o ``[B, H, Dv]`` (q's dtype) and the
    new cache (the last ``window_size`` tokens only, with a window)."""
    B, H, D = q.shape
    if k.ndim != 3 or v.ndim != 3 or k.shape[:1] != (B,) or g.shape != (B, H):
        raise ValueError(f"step shapes: q [B, H, D], k [B, Hk, D], v [B, Hk, Dv], g [B, H]; got "
                         f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}, g {tuple(g.shape)}")
    scale = D ** -0.5 if scale is None else float(scale)
    fdt = torch.float64 if q.dtype == torch.float64 else torch.float32
    zero = g.new_zeros(B, 1, H, dtype=fdt)
    if cache is None:
        keys, values, bias = k[:, None], v[:, None], zero
    else:
        keys = torch.cat([cache[0], k[:, None]], 1)
        values = torch.cat([cache[1], v[:, None]], 1)
        bias = torch.cat([cache[2] + g.to(fdt)[:, None], zero], 1)  # c_t − c_j = (c_{t−1} − c_j) + g_t
    if window_size is not None:
        keys, values, bias = keys[:, -window_size:], values[:, -window_size:], bias[:, -window_size:]
    group = H // keys.shape[2]
    kh = keys.to(fdt).repeat_interleave(group, dim=2)
    vh = values.to(fdt).repeat_interleave(group, dim=2)
    scores = torch.einsum("bhd,blhd->bhl", q.to(fdt), kh) * scale + bias.transpose(1, 2)
    o = torch.einsum("bhl,blhd->bhd", torch.softmax(scores, -1), vh)
    return o.to(q.dtype), (keys, values, bias)
