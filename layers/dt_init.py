"""The time-step bias initialisation of Mamba-2 and the layers that borrow its decay (Gated DeltaNet, KDA,
Gated DeltaProduct, MoM, Mamba-3)."""
from __future__ import annotations

import math

import torch


@torch.no_grad()
def fill_dt_bias_(dt_bias: torch.Tensor, dt_min: float = 1e-3, dt_max: float = 0.1, floor: float = 1e-4):
    """dt log-uniform in [dt_min, dt_max] (at least ``floor``), stored as softplus⁻¹(dt), so that
    softplus(dt_bias) = dt: ``dt_bias = dt + log(−expm1(−dt))``. In place, any shape."""
    dt = torch.exp(torch.rand_like(dt_bias) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp_min(floor)
    dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))
