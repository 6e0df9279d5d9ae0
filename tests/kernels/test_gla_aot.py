"""Every gated-linear-attention Triton kernel compiles for sm_90 and sm_80 at its GPU block sizes and
fits in shared memory (see tests/kernels/aot.py).

Under ``TRITON_INTERPRET=1`` ``triton.jit`` yields interpreter objects, so the compilation runs in a
child process with the interpreter off: ``python tests/kernels/test_gla_aot.py [--all]``.
"""
from __future__ import annotations

import sys

import pytest

POINTER_TYPES = {name: "*bf16" for name in ("q", "k", "v", "g", "u", "do", "o", "dq", "dk", "dv")}
POINTER_TYPES.update({name: "*i32" for name in ("cu_seqlens", "chunk_indices", "chunk_offsets")})
SCALAR_TYPES = {"T": "i32", "NT": "i32", "scale": "fp32"}

# Variants: (gate, use_u, varlen). The quick run compiles every kernel in its richest variant, plus the
# scalar-gate branches of the kernels that have one; the full run compiles every variant and config.
RICHEST = ("channel", True, True)
SCALAR = ("head", True, False)
ALL_VARIANTS = [(g, u, vl) for g in ("channel", "head", None) for u in (True, False) for vl in (True, False)]


def _constexprs(gate, use_u, varlen, K, V):
    from recall_lm.kernels.utils import next_power_of_2

    BK, BV = min(64, next_power_of_2(K)), min(64, next_power_of_2(V))
    return dict(H=4, K=K, V=V, GK=K if gate == "channel" else 1, BT=64, BC=16, BK=BK, BV=BV,
                HAS_G=gate is not None, HEAD_G=gate == "head", CHANNEL_G=gate == "channel", USE_U=use_u,
                USE_H0=True, STORE_FINAL=True, USE_DHT=True, STORE_DH0=True, STORE_GQ=use_u, USE_FINAL=True,
                IS_VARLEN=varlen, DOT_PREC="tf32")


def _kernels():
    from recall_lm.kernels.gla import triton_backward as bwd
    from recall_lm.kernels.gla import triton_forward as fwd

    return {
        "gate_cumsum": fwd.gate_cumsum_kernel,
        "state_fwd": fwd.state_fwd_kernel,
        "scores_fwd_scalar": fwd.scores_fwd_scalar_kernel,
        "scores_fwd_channel": fwd.scores_fwd_channel_kernel,
        "output_fwd": fwd.output_fwd_kernel,
        "state_bwd": bwd.state_bwd_kernel,
        "scores_bwd": bwd.scores_bwd_kernel,
        "dv": bwd.dv_kernel,
        "dqk_intra_channel": bwd.dqk_intra_channel_kernel,
        "dqk": bwd.dqk_kernel,
        "gate_grad": bwd.gate_grad_kernel,
    }


def _applies(name, gate) -> bool:
    if name in ("scores_fwd_channel", "dqk_intra_channel"):
        return gate == "channel"
    if name == "scores_fwd_scalar":
        return gate != "channel"
    return gate is not None or name not in ("gate_cumsum", "gate_grad")


def _cases(full: bool):
    from recall_lm.kernels.gla.triton_common import GPU_CONFIGS

    configs = GPU_CONFIGS if full else [max(GPU_CONFIGS, key=lambda c: (c[1], c[0]))]
    for name in _kernels():
        if full:
            variants = ALL_VARIANTS
        else:
            variants = [RICHEST, SCALAR] if name in ("scores_fwd_scalar", "dqk") else [RICHEST]
        for variant in variants:
            if _applies(name, variant[0]):
                for K in ((64, 128) if full else (128,)):
                    for num_warps, num_stages in configs:
                        yield name, variant, K, num_warps, num_stages


def compile_case(case) -> str:
    """Compile one (kernel, variant, K = V, num_warps, num_stages) for sm_90 and sm_80."""
    import triton

    from tests.kernels.aot import assert_compiles_and_fits

    name, (gate, use_u, varlen), K, num_warps, num_stages = case
    kernel = _kernels()[name]
    fn = kernel
    while not isinstance(fn, triton.runtime.jit.JITFunction):
        fn = fn.fn
    constexpr_names = {fn.arg_names[i] for i in fn.constexprs}
    values = _constexprs(gate, use_u, varlen, K, K)
    if name == "gate_cumsum":
        values["BK"] = min(64, max(16, values["GK"]))
    constexprs = {n: values[n] for n in constexpr_names}
    signature = {n: POINTER_TYPES.get(n, SCALAR_TYPES.get(n, "*fp32"))
                 for n in fn.arg_names if n not in constexpr_names}
    try:
        assert_compiles_and_fits(kernel, signature, constexprs, num_warps, num_stages)
    except Exception as e:  # name the case that failed
        raise AssertionError(f"{case}: {type(e).__name__}: {e}") from e
    return str(case)


def compile_all(full: bool) -> int:
    """Compile every case on all cores; returns the number of cases."""
    from tests.kernels.aot import compile_in_pool

    return compile_in_pool(compile_case, list(_cases(full)))


def _run_child(full: bool):
    from tests.kernels.aot import run_compile_child

    run_compile_child(__name__, full)


def test_kernels_compile_for_sm90_sm80():
    """Each kernel in its richest variant (and scalar-gate branches) at K = V = 128, with the config that
    has the most pipeline stages (most shared memory). K = V = 64 uses the same 64-wide blocks (one
    K/V block instead of two) and is compiled by the slow test. ~40 s with a cold Triton cache."""
    _run_child(full=False)


@pytest.mark.slow
def test_kernels_compile_every_variant_and_config():
    _run_child(full=True)


if __name__ == "__main__":
    n = compile_all(full="--all" in sys.argv)
    print(f"compiled {n} kernels")
