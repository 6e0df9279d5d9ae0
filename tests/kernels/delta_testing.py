"""Shared helpers for the gated delta-rule tests: random inputs and forward+backward runs."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from recall_lm.kernels.ops import gated_delta_rule
from tests.kernels import gla_testing

GATE_RANGES = {"typical": (-3.0, -0.01), "strong": (-21.0, -19.0), "weak": (-2e-4, 0.0)}
BETA_RANGES = {"uniform": (0.0, 1.0), "near0": (0.0, 1e-3), "near1": (0.999, 1.0)}


def make_inputs(B=2, T=15, H=2, K=16, V=8, gated=True, use_h0=True, N=None, dtype=torch.float64,
                gate_range="typical", beta_range="uniform", l2_keys=True, seed=0):
    """Random leaf tensors (requires_grad): keys L2-normalised (``l2_keys``) or of norm ≤ 1."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, lo=-1.0, hi=1.0):
        return torch.rand(*shape, generator=gen, dtype=torch.float64) * (hi - lo) + lo

    k = rand(B, T, H, K)
    k = F.normalize(k, dim=-1) if l2_keys else k / K**0.5  # |k| ≤ 1 either way
    lo, hi = BETA_RANGES[beta_range]
    x = {"q": rand(B, T, H, K), "k": k, "v": rand(B, T, H, V), "beta": rand(B, T, H, lo=lo, hi=hi),
         "g": None, "initial_state": None}
    if gated:
        x["g"] = rand(B, T, H, lo=GATE_RANGES[gate_range][0], hi=GATE_RANGES[gate_range][1])
    x = {n: None if t is None else t.to(dtype) for n, t in x.items()}
    if use_h0:
        x["initial_state"] = rand(B if N is None else N, H, K, V).to(torch.float64 if dtype == torch.float64
                                                                       else torch.float32)
    return {name: (t.requires_grad_() if t is not None else None) for name, t in x.items()}


NAMES = ("q", "k", "v", "beta", "g")


def run(inputs, backend, seed=1, **kwargs):
    """Forward + backward of ``sum(o * do) + sum(final * dfinal)``; returns (o, final, grads dict)."""
    o, final = gated_delta_rule(*(inputs[n] for n in NAMES), initial_state=inputs["initial_state"],
                                output_final_state=True, backend=backend, **kwargs)
    gen = torch.Generator().manual_seed(seed)
    do = torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.dtype)
    dfinal = torch.randn(final.shape, generator=gen, dtype=torch.float64).to(final.dtype)
    loss = (o.double() * do.double()).sum() + (final.double() * dfinal.double()).sum()
    leaves = {name: t for name, t in inputs.items() if t is not None and t.requires_grad}
    grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    return o.detach(), final.detach(), dict(zip(leaves, grads))


def compare_to_naive(inputs, backend, rtol, **kwargs):
    """Forward, final state and every gradient of ``backend`` against the fp64 naive loop."""
    gla_testing.compare_to_naive(inputs, backend, rtol, run_op=run, **kwargs)
