"""Sliding-window attention: causal softmax attention where query i sees keys [i - w + 1, i].

Backends: ``triton`` (flash-attention style kernels, CUDA or ``TRITON_INTERPRET=1``), ``torch``
(blocked/banded PyTorch, O(T * w) time and memory on any device), ``naive`` (fp64 full-mask
reference for tests). ``auto`` picks triton on CUDA tensors and torch otherwise.
"""
from __future__ import annotations

import torch

from recall_lm.kernels.swa.banded_torch import swa_torch
from recall_lm.kernels.swa.naive import swa_naive
from recall_lm.kernels.utils import autocast_aware, check_cu_seqlens, interpreter_enabled, triton_device_error

__all__ = ["sliding_window_attention"]

BACKENDS = ("auto", "triton", "torch", "naive")
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# Largest head dim whose kernels are compiled and shared-memory checked for sm_80/sm_90 in the tests.
TRITON_MAX_HEAD_DIM = 128


def _check_inputs(q, k, v, window_size, scale, cu_seqlens) -> None:
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise ValueError(f"{name} must be a 4-D tensor [B, T, H, D], got {getattr(x, 'shape', type(x))}")
        if x.dtype not in FLOAT_DTYPES:
            raise ValueError(f"{name} must be fp16, bf16, fp32 or fp64, got {x.dtype}")
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got k {tuple(k.shape)} and v {tuple(v.shape)}")
    if q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3]:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} must agree in B, T and D")
    if k.shape[2] == 0 or q.shape[2] % k.shape[2] != 0:
        raise ValueError(f"k/v heads ({k.shape[2]}) must divide q heads ({q.shape[2]})")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    if isinstance(window_size, bool) or not isinstance(window_size, int) or window_size < 1:
        raise ValueError(f"window_size must be an int >= 1, got {window_size!r}")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))):
        raise ValueError(f"scale must be a float or None, got {scale!r}")
    if cu_seqlens is not None:
        check_cu_seqlens(cu_seqlens, q.shape[0], q.shape[1], q.device)


@autocast_aware('q', 'k', 'v')
def sliding_window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window_size: int,
    *,
    scale: float | None = None,
    cu_seqlens: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Causal sliding-window softmax attention.

    q: [B, T, H, D]; k, v: [B, T, Hk, D] with Hk dividing H (GQA: query head h reads kv head
    h // (H // Hk)). Query i attends to keys [i - window_size + 1, i]; window_size >= T is plain
    causal attention. scale defaults to D ** -0.5. cu_seqlens: optional int [N + 1] offsets of
    packed sequences (B == 1); windows never cross a sequence boundary. The triton backend takes
    D <= 128 and fp16/bf16/fp32 (``auto`` uses torch otherwise); cu_seqlens is checked on the host
    (one synchronisation).
    Returns o [B, T, H, D] in q's dtype. Raises ValueError on bad arguments.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    _check_inputs(q, k, v, window_size, scale, cu_seqlens)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if backend == "auto":
        triton_ok = q.shape[-1] <= TRITON_MAX_HEAD_DIM and q.dtype != torch.float64
        backend = "triton" if q.is_cuda and triton_ok else "torch"
    if backend == "triton":
        if q.shape[-1] > TRITON_MAX_HEAD_DIM:
            raise ValueError(f"backend='triton' needs head dim D <= {TRITON_MAX_HEAD_DIM}, got {q.shape[-1]}")
        if not (q.is_cuda or (q.device.type == "cpu" and interpreter_enabled())):
            raise triton_device_error(q)
        if q.dtype == torch.float64:
            raise ValueError("backend='triton' supports fp16, bf16 and fp32 inputs, not fp64")
    if q.shape[0] * q.shape[1] == 0:
        return q * 0 + (k.sum() + v.sum()) * 0  # empty output that still carries the autograd graph
    if backend == "triton":
        # Imported on first use: triton.jit reads TRITON_INTERPRET when the kernels are defined.
        from recall_lm.kernels.swa.triton_autograd import swa_triton

        return swa_triton(q, k, v, window_size, scale, cu_seqlens)
    if backend == "torch":
        return swa_torch(q, k, v, window_size, scale, cu_seqlens)
    return swa_naive(q, k, v, window_size, scale, cu_seqlens)
