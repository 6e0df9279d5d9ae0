"""Feature maps φ for linear attention: softmax(q·k) is replaced by φ(q)·φ(k)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class IdentityFeatureMap(nn.Module):
    """φ(x) = x."""

    def output_dim(self, input_dim: int) -> int:
        return input_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class EluFeatureMap(nn.Module):
    """φ(x) = elu(x) + 1 (Katharopoulos et al., 2020): positive, so the normaliser is safe."""

    def output_dim(self, input_dim: int) -> int:
        return input_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.elu(x) + 1


class TaylorFeatureMap(nn.Module):
    """BASED's second-order Taylor map of exp(q·k/√d), d = input_dim:

        φ(x) = [1, x / d^¼, vec(x ⊗ x) / (√2·√d)]   so   φ(q)·φ(k) = 1 + q·k/√d + (q·k)²/(2d).

    ``symmetric=True`` keeps only the upper triangle of x ⊗ x with √2 on the off-diagonal entries:
    the same kernel values with 1 + d + d(d+1)/2 features instead of 1 + d + d² (153 vs 273 at d = 16).
    x: [..., d] -> [..., output_dim(d)].
    """

    def __init__(self, symmetric: bool = True):
        super().__init__()
        self.symmetric = symmetric

    def output_dim(self, input_dim: int) -> int:
        quadratic = input_dim * (input_dim + 1) // 2 if self.symmetric else input_dim * input_dim
        return 1 + input_dim + quadratic

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = x.shape[-1]
        outer = x[..., :, None] * x[..., None, :]  # [..., d, d]
        if self.symmetric:
            rows, cols = torch.triu_indices(d, d, device=x.device)
            weight = torch.where(rows == cols, 1.0, 2.0).to(x.dtype).sqrt()
            quadratic = outer[..., rows, cols] * weight
        else:
            quadratic = outer.flatten(-2)
        ones = torch.ones_like(x[..., :1])
        return torch.cat([ones, x / d**0.25, quadratic / (math.sqrt(2.0) * math.sqrt(d))], dim=-1)


FEATURE_MAPS = {
    "identity": IdentityFeatureMap,
    "elu": EluFeatureMap,
    "taylor": lambda: TaylorFeatureMap(symmetric=False),
    "taylor_symmetric": lambda: TaylorFeatureMap(symmetric=True),
}


def build_feature_map(name: str) -> nn.Module:
    if name not in FEATURE_MAPS:
        raise ValueError(f"unknown feature map {name!r}; known: {', '.join(FEATURE_MAPS)}")
    return FEATURE_MAPS[name]()
