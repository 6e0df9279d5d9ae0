"""Shared pieces of the Triton path: interpreter detection, block sizes, the varlen block table."""
from __future__ import annotations

import torch

from recall_lm.kernels.utils import interpreter_enabled

GPU_OUTER_BLOCK = 64


def outer_block() -> int:
    """Tokens per program along the outer axis (queries in fwd/dq, keys in dk/dv).

    Fixed rather than autotuned because it sets the grid and the varlen block table. The
    interpreter uses 16 so that small test shapes still span several blocks.
    """
    return 16 if interpreter_enabled() else GPU_OUTER_BLOCK


def dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot`` precision for operands converted to fp32 from ``dtype``.

    fp16/bf16 values are exact in tf32, so tf32 only rounds the fp32 probabilities (relative
    2^-11, finer than the bf16 rounding of the usual flash-attention kernels). fp32 inputs follow
    PyTorch's matmul setting: full-precision ("ieee") products under the default "highest",
    tf32 after ``torch.set_float32_matmul_precision("high")``.
    """
    if dtype in (torch.float16, torch.bfloat16):
        return "tf32"
    return "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32"


def block_table(cu_seqlens: torch.Tensor, block: int) -> torch.Tensor:
    """Map each program to (sequence index, block index within that sequence).

    cu_seqlens: [N + 1] offsets. Returns int32 [num_blocks, 2], where sequence n contributes
    ceil(len_n / block) rows. One host synchronisation (the number of blocks).
    """
    cu = cu_seqlens.to(torch.long)
    nblocks = (cu[1:] - cu[:-1] + block - 1) // block
    seq = torch.repeat_interleave(torch.arange(len(nblocks), device=cu.device), nblocks)
    first = torch.cumsum(nblocks, 0) - nblocks
    idx = torch.arange(len(seq), device=cu.device) - first[seq]
    return torch.stack([seq, idx], dim=1).to(torch.int32).contiguous()


def head_block(D: int) -> int:
    """Head-dimension tile: the next power of two, at least 16 (the smallest ``tl.dot`` size)."""
    return max(16, 1 << (D - 1).bit_length())


def launch_grid(B: int, T: int, heads: int, block: int, cu_seqlens, table, device):
    """Grid (blocks, heads or batch * heads) and the (cu_seqlens, table) arguments of a kernel.

    Fixed-length batches use blocks = ceil(T / block) per sequence and empty placeholders for
    cu_seqlens and table; packed batches (B == 1) use one program per row of the block table.
    """
    if cu_seqlens is None:
        empty = torch.empty(0, dtype=torch.int32, device=device)
        return (-(-T // block), B * heads), empty, empty
    if table is None:
        table = block_table(cu_seqlens, block)
    return (table.shape[0], heads), cu_seqlens, table
