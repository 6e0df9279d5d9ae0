"""Shared helpers for the gated-linear-attention tests: random inputs and forward+backward runs."""

from __future__ import annotations

import torch

from recall_lm.kernels.ops import gated_linear_attention

# "mild": RWKV-7's range of log-decays (> -e^-0.5 per token), where per-channel scores are one matmul
GATE_RANGES = {"typical": (-3.0, -0.01), "strong": (-21.0, -19.0), "weak": (-2e-4, 0.0), "mild": (-0.6, 0.0)}


def make_inputs(
    B=2,
    T=15,
    H=2,
    K=16,
    V=8,
    gate="channel",
    use_u=False,
    use_h0=True,
    N=None,
    dtype=torch.float64,
    gate_range="typical",
    seed=0,
):
    """Random leaf tensors (requires_grad) for one call; ``gate`` in {None, "head", "channel"}."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, lo=-1.0, hi=1.0):
        return (torch.rand(*shape, generator=gen, dtype=torch.float64) * (hi - lo) + lo).to(dtype)

    x = {
        "q": rand(B, T, H, K),
        "k": rand(B, T, H, K),
        "v": rand(B, T, H, V),
        "g": None,
        "u": None,
        "initial_state": None,
    }
    lo, hi = GATE_RANGES[gate_range]
    if gate == "head":
        x["g"] = rand(B, T, H, lo=lo, hi=hi)
    elif gate == "channel":
        x["g"] = rand(B, T, H, K, lo=lo, hi=hi)
    if use_u:
        x["u"] = rand(H, K)
    if use_h0:
        x["initial_state"] = (
            rand(B if N is None else N, H, K, V).float()
            if dtype != torch.float64
            else rand(B if N is None else N, H, K, V)
        )
    return {name: (t.requires_grad_() if t is not None else None) for name, t in x.items()}


def op_runner(op, names):
    """A ``run(inputs, backend, seed=1, **kwargs)`` for ``op``: call it on the inputs named ``names`` (in
    order) with ``initial_state`` and the final state, then one backward of ``sum(o * do) + sum(final *
    dfinal)`` (do, dfinal seeded); returns (o, final, grads of every leaf that requires grad)."""

    def run(inputs, backend, seed=1, **kwargs):
        o, final = op(
            *(inputs[n] for n in names),
            initial_state=inputs["initial_state"],
            output_final_state=True,
            backend=backend,
            **kwargs,
        )
        gen = torch.Generator().manual_seed(seed)
        do = torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.dtype)
        dfinal = torch.randn(final.shape, generator=gen, dtype=torch.float64).to(final.dtype)
        loss = (o.double() * do.double()).sum() + (final.double() * dfinal.double()).sum()
        leaves = {name: t for name, t in inputs.items() if t is not None and t.requires_grad}
        grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
        return o.detach(), final.detach(), dict(zip(leaves, grads))

    return run


run = op_runner(gated_linear_attention, ("q", "k", "v", "g", "u"))  # forward + backward of one GLA call


def assert_close(name, got, want, rtol, atol_scale=None):
    """Relative-to-max-magnitude comparison: ``|got - want| <= rtol * max(|want|.max(), 1)`` elementwise."""
    assert got is not None, f"{name}: no gradient"
    got, want = got.double(), want.double()
    assert torch.isfinite(got).all(), f"{name}: non-finite values"
    ref = max(want.abs().max().item(), 1.0) if atol_scale is None else atol_scale
    err = (got - want).abs().max().item()
    assert err <= rtol * ref, f"{name}: max abs err {err:.3e} > {rtol:.1e} * {ref:.3e}"


def compare_to_naive(inputs, backend, rtol, run_op=run, **kwargs):
    """Forward, final state and every gradient of ``backend`` against the fp64 naive loop; ``run_op``
    runs one op family's forward + backward (this module's ``run`` for gated linear attention)."""
    ref = {
        n: (t.detach().double().requires_grad_(t.requires_grad) if t is not None else None)
        for n, t in inputs.items()
    }
    o_ref, s_ref, g_ref = run_op(ref, "naive", cu_seqlens=kwargs.get("cu_seqlens"), scale=kwargs.get("scale"))
    o, s, grads = run_op(inputs, backend, **kwargs)
    assert o.dtype == inputs["q"].dtype
    assert s.dtype == (torch.float64 if inputs["q"].dtype == torch.float64 else torch.float32)
    assert_close("o", o, o_ref, rtol)
    assert_close("final_state", s, s_ref, rtol)
    for name in g_ref:
        assert_close(f"d{name}", grads[name], g_ref[name], rtol)
