"""Normalisation layers, and ``build_norm`` for the block norms a ModelConfig names."""
from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last dimension: ``x / rms(x) * weight``, computed in fp32 at
    least (fp64 inputs stay fp64)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = torch.promote_types(x.dtype, torch.float32)
        xf = x.to(dtype)
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.to(dtype)).to(x.dtype)


class GroupedRMSNorm(nn.Module):
    """RMSNorm over ``groups`` equal slices of the last dimension, one weight per channel: Mamba-2's
    norm with ``group_size = dim / n_groups`` (groups = 1 is RMSNorm). x: [..., dim] -> [..., dim]."""

    def __init__(self, dim: int, groups: int = 1, eps: float = 1e-5):
        super().__init__()
        if groups < 1 or dim % groups:
            raise ValueError(f"GroupedRMSNorm: groups={groups} must be ≥ 1 and divide dim={dim}")
        self.groups, self.eps = groups, eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = torch.promote_types(x.dtype, torch.float32)
        xg = x.to(dtype).unflatten(-1, (self.groups, -1))
        y = (xg * torch.rsqrt(xg.pow(2).mean(-1, keepdim=True) + self.eps)).flatten(-2)
        return (y * self.weight.to(dtype)).to(x.dtype)


# "layernorm" is torch's LayerNorm (mean-centred, weight and bias): Zoology's and GPT-2's block norm.
NORMS = {"rmsnorm": RMSNorm, "layernorm": nn.LayerNorm}


def build_norm(name: str, dim: int, eps: float) -> nn.Module:
    """The norm called ``name`` ("rmsnorm" or "layernorm") over the last ``dim`` channels."""
    if name not in NORMS:
        raise ValueError(f"unknown norm {name!r}; known: {', '.join(NORMS)}")
    return NORMS[name](dim, eps=eps)
