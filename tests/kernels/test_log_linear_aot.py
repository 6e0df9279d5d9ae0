"""Every log-linear attention Triton kernel compiles for sm_90 and sm_80 at its GPU block sizes and fits in
shared memory (see tests/kernels/aot.py).

Under ``TRITON_INTERPRET=1`` ``triton.jit`` yields interpreter objects, so the compilation runs in a child
process with the interpreter off: ``python -m tests.kernels.test_log_linear_aot [--all]``.
"""
from __future__ import annotations

import sys

import pytest

INPUTS = ("q", "k", "v", "o", "do")  # in the activations' dtype; every other pointer is fp32
SCALARS = {"T": "i32", "NT": "i32", "NW": "i32", "J": "i32", "scale": "fp32"}
KERNELS = ("chunk_state_kernel", "output_kernel", "read_grad_kernel", "dq_dlam_kernel", "dk_dv_kernel")


def compile_case(case) -> str:
    """Compile one (kernel, head dim, input dtype, num_warps, num_stages) for sm_90 and sm_80."""
    import triton

    from recall_lm.kernels.log_linear import triton_backward, triton_forward
    from tests.kernels.aot import assert_compiles_and_fits

    name, D, dtype, num_warps, num_stages = case
    kernel = getattr(triton_forward, name, None) or getattr(triton_backward, name)
    fn = kernel
    while not isinstance(fn, triton.runtime.jit.JITFunction):
        fn = fn.fn
    constexpr_names = {fn.arg_names[i] for i in fn.constexprs}
    values = dict(H=8, K=D, V=D, L=20, C=64, LOG_C=6, BK=D, BV=64)  # L: levels of 2^19 tokens
    signature = {n: f"*{dtype}" if n in INPUTS else SCALARS.get(n, "*fp32")
                 for n in fn.arg_names if n not in constexpr_names}
    try:
        assert_compiles_and_fits(kernel, signature, {n: values[n] for n in constexpr_names}, num_warps,
                                 num_stages)
    except Exception as e:  # name the case that failed
        raise AssertionError(f"{case}: {type(e).__name__}: {e}") from e
    return str(case)


def _cases(full: bool):
    from recall_lm.kernels.gla.triton_common import GPU_CONFIGS

    configs = GPU_CONFIGS if full else [max(GPU_CONFIGS, key=lambda c: (c[1], c[0]))]
    dtypes = ("bf16", "fp32") if full else ("bf16",)
    dims = (64, 128) if full else (128,)
    return [(name, D, dtype, w, s) for name in KERNELS for D in dims for dtype in dtypes for w, s in configs]


def compile_all(full: bool) -> int:
    """Compile every case on all cores; returns the number of cases."""
    from tests.kernels.aot import compile_in_pool

    return compile_in_pool(compile_case, list(_cases(full)))


def _run_child(full: bool):
    from tests.kernels.aot import run_compile_child

    run_compile_child("tests.kernels.test_log_linear_aot", full)


def test_kernels_compile_for_sm90_sm80():
    """Each kernel at K = V = 128 (the largest tiles) in bf16 with the deepest pipeline."""
    _run_child(full=False)


@pytest.mark.slow
def test_kernels_compile_every_config_dtype_and_head_dim():
    _run_child(full=True)


if __name__ == "__main__":
    n = compile_all(full="--all" in sys.argv)
    print(f"compiled {n} kernels")
