"""Rotary position embeddings (RoPE), applied at absolute positions so decoding can start at an offset."""
from __future__ import annotations

import torch
from torch import nn


class RotaryEmbedding(nn.Module):
    """Rotates channel pairs (i, i + D/2) of each head by angle ``position * base^(-2i/D)``.

    The inverse frequencies are a non-persistent fp32 buffer (they stay fp32 under mixed precision).
    """

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head dimension, got {head_dim}")
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, x: torch.Tensor, offset: int | torch.Tensor = 0) -> torch.Tensor:
        """x: [B, T, H, D]; offset: int, or [B] per-sequence start positions. Returns x rotated."""
        T = x.shape[1]
        positions = torch.arange(T, device=x.device, dtype=torch.float32)
        if torch.is_tensor(offset):
            positions = positions[None, :] + offset.to(x.device, torch.float32)[:, None]  # [B, T]
        else:
            positions = (positions + offset)[None, :]  # [1, T]
        angles = positions[..., None] * self.inv_freq.float()  # [B|1, T, D/2]
        cos, sin = angles.cos()[:, :, None, :], angles.sin()[:, :, None, :]
        x1, x2 = x.float().chunk(2, dim=-1)
        rotated = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
        return rotated.to(x.dtype)
