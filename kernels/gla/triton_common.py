"""Pieces shared by the gated-linear-attention Triton kernels: launch configs, dot precision, varlen lookup.

Layout conventions of every kernel: q, k ``[B, T, H, K]``, v/o ``[B, T, H, V]`` contiguous, read as
packed rows ``(bos + t) * H + h``; gate cumsums ``G``/``Gq`` fp32 ``[B, T, H, GK]`` with GK = 1 (per-head
gate, read with channel stride 0) or K; chunk states fp32 ``[NT_total, H, K, V]``; intra-chunk score
matrices fp32 ``[B, T, H, BT]`` (row i of a chunk against the BT columns of the same chunk).
"""
from __future__ import annotations

import triton
import triton.language as tl

from recall_lm.kernels.utils import interpreter_enabled

SUB_CHUNK = 16

# tl.dot on fp32 operands: TF32 tensor cores on GPU (about 1e-3 relative per product, as in fla's kernels);
# full fp32 ("ieee") under the interpreter, so CPU tests compare to fp64 at ~1e-5.
DOT_PRECISION = "ieee" if interpreter_enabled() else "tf32"


# (num_warps, num_stages) tried by the autotuner on GPU; the AOT test compiles every one of them.
GPU_CONFIGS = [(4, 2), (4, 3), (8, 2), (8, 3)]


def autotune_configs():
    """One config under the interpreter (autotuning needs a driver); ``GPU_CONFIGS`` on GPU."""
    if interpreter_enabled():
        return [triton.Config({}, num_warps=4, num_stages=1)]
    return [triton.Config({}, num_warps=w, num_stages=s) for w, s in GPU_CONFIGS]


@triton.jit
def sequence_bounds(i_n, T, cu_seqlens, IS_VARLEN: tl.constexpr):
    """First row and length of sequence ``i_n`` (a batch index when not varlen)."""
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_n).to(tl.int32)
        seq_len = tl.load(cu_seqlens + i_n + 1).to(tl.int32) - bos
    else:
        bos = i_n * T
        seq_len = T
    return bos, seq_len


@triton.jit
def chunk_lookup(i_t, i_b, T, NT, cu_seqlens, chunk_indices, IS_VARLEN: tl.constexpr):
    """Map a grid chunk index to (first row of its sequence, sequence length, chunk within the sequence,
    global chunk index into the state buffers)."""
    if IS_VARLEN:
        i_n = tl.load(chunk_indices + i_t * 2).to(tl.int32)
        i_c = tl.load(chunk_indices + i_t * 2 + 1).to(tl.int32)
        bos = tl.load(cu_seqlens + i_n).to(tl.int32)
        seq_len = tl.load(cu_seqlens + i_n + 1).to(tl.int32) - bos
        i_h_chunk = i_t
    else:
        i_c = i_t
        bos = i_b * T
        seq_len = T
        i_h_chunk = i_b * NT + i_t
    return bos, seq_len, i_c, i_h_chunk
