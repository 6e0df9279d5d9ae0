"""Rotary position embeddings (RoPE), applied at absolute positions so decoding can start at an offset."""
from __future__ import annotations

import torch
from torch import nn


class RotaryEmbedding(nn.Module):
    """Rotates channel pairs (i, i + D/2) of each head by angle ``position * base^(-2i/D)``.

    Angles are computed on the fly in fp32 (fp64 for fp64 inputs), never in the model's low
    precision, and no buffer exists for mixed precision or FSDP to cast.
    """

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head dimension, got {head_dim}")
        self.head_dim, self.base = head_dim, base

    def forward(
        self, x: torch.Tensor, offset: int | torch.Tensor = 0, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x: [B, T, H, D]; offset: int, or [B] per-sequence start positions; or ``positions`` [T] given
        outright (packed documents restart at 0). Returns x rotated."""
        T = x.shape[1]
        dtype = torch.promote_types(x.dtype, torch.float32)  # fp32 at least, fp64 stays fp64
        if positions is not None:
            positions = positions.to(x.device, dtype)[None, :]  # [1, T]
        elif torch.is_tensor(offset):
            positions = torch.arange(T, device=x.device, dtype=dtype)
            positions = positions[None, :] + offset.to(x.device, dtype)[:, None]  # [B, T]
        else:
            positions = (torch.arange(T, device=x.device, dtype=dtype) + offset)[None, :]  # [1, T]
        inv_freq = self.base ** (
            -torch.arange(0, self.head_dim, 2, device=x.device, dtype=dtype) / self.head_dim
        )
        angles = positions[..., None] * inv_freq  # [B|1, T, D/2]
        cos, sin = angles.cos()[:, :, None, :], angles.sin()[:, :, None, :]
        x1, x2 = x.to(dtype).chunk(2, dim=-1)
        rotated = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
        return rotated.to(x.dtype)
