"""Every SWA Triton kernel compiles for sm_90 and sm_80 at its real block sizes and fits shared memory,
without and with the forget gate's bias (``HAS_GATE``: recall_lm.kernels.forgetting_attn runs on them).

The test session runs with TRITON_INTERPRET=1, under which ``triton.jit`` (including Triton's own
``tl.sum``/``tl.max``) builds interpreter functions that the GPU compiler cannot use. So the
compilations run in one child Python without TRITON_INTERPRET (``python -m tests.kernels.test_swa_aot
CASES_JSON``), which reports "ok" or the error for each case; the tests assert on that report.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# kernel name -> (pointer args in the input dtype, fp32 pointer args, outer block name, inner block name)
KERNELS = {
    "swa_fwd_kernel": (["q", "k", "v", "o"], ["lse", "c"], "BLOCK_M", "BLOCK_N"),
    "swa_bwd_dq_kernel": (["q", "k", "v", "do", "dq"], ["lse", "delta", "c", "dc"], "BLOCK_M", "BLOCK_N"),
    "swa_bwd_dkdv_kernel": (
        ["q", "k", "v", "do", "dk", "dv"], ["lse", "delta", "c", "dc"], "BLOCK_N", "BLOCK_M"
    ),
}
DTYPES = {"bf16": "tf32", "fp16": "tf32", "fp32": "ieee"}  # input dtype -> triton_common.dot_precision


def compile_case(name: str, D: int, dtype: str, configs: str, gate: str = "plain") -> None:
    """Child side: compile ``name`` at head dim D for sm_90 and sm_80 with each selected autotuning
    config ("largest": the largest inner block and pipeline depth, i.e. the most shared memory), with the
    forget gate's bias when ``gate`` is "gated"."""
    from recall_lm.kernels.swa import triton_backward, triton_forward
    from recall_lm.kernels.swa.triton_common import GPU_OUTER_BLOCK
    from tests.kernels.aot import assert_compiles_and_fits

    if name == "swa_bwd_delta_kernel":
        signature = {"o": f"*{dtype}", "do": f"*{dtype}", "delta": "*fp32", "n_tokens": "i32"}
        constexprs = {"H": 8, "D": D, "BLOCK_T": triton_backward.DELTA_BLOCK, "BLOCK_D": D}
        assert_compiles_and_fits(triton_backward.swa_bwd_delta_kernel, signature, constexprs)
        return
    kernel = getattr(triton_forward, name, None) or getattr(triton_backward, name)
    io, f32, outer, inner = KERNELS[name]
    signature = {arg: f"*{dtype}" for arg in io}
    signature.update({arg: "*fp32" for arg in f32})
    signature.update({"cu_seqlens": "*i32", "table": "*i32", "scale": "fp32", "window": "i32", "T": "i32"})
    selected = kernel.configs
    if configs == "largest":
        selected = [max(kernel.configs, key=lambda c: (c.kwargs[inner], c.num_stages, c.num_warps))]
    assert len(kernel.configs) > 1, "the child must see the GPU autotuning configs, not the interpreter's"
    for config in selected:
        constexprs = {"H": 8, "G": 2, "D": D, "BLOCK_D": D, "IS_VARLEN": True, "DOT_PRECISION": DTYPES[dtype],
                      "HAS_GATE": gate == "gated", outer: GPU_OUTER_BLOCK, **config.kwargs}
        assert_compiles_and_fits(kernel, signature, constexprs, config.num_warps, config.num_stages)


def compile_in_child(cases: list, workers: int = 2) -> dict:
    """Run ``compile_case`` for each case in fresh Pythons without TRITON_INTERPRET.

    Cold compilation takes a few seconds per kernel and target, so the cases are split over
    ``workers`` child processes (ptxas and the MLIR passes are single-threaded).
    """
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    workers = max(1, min(workers, os.cpu_count() or 1, len(cases)))
    children = [
        subprocess.Popen([sys.executable, "-m", "tests.kernels.test_swa_aot", json.dumps(cases[i::workers])],
                         cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(workers)
    ]
    report = {}
    for child in children:
        stdout, stderr = child.communicate(timeout=1800)
        assert child.returncode == 0, stderr[-3000:]
        report.update(json.loads(stdout.strip().splitlines()[-1]))
    return report


def key(case) -> str:
    return "/".join(str(x) for x in case)


ALL_KERNELS = [*KERNELS, "swa_bwd_delta_kernel"]
DEFAULT_CASES = [[name, D, "bf16", "largest"] for name in ALL_KERNELS for D in (64, 128)]
DEFAULT_CASES += [[name, 128, "bf16", "largest", "gated"] for name in KERNELS]  # FoX's, most shared memory
# Every autotuning config in bf16, and the largest in fp32 (fp16 differs from bf16 only in the mma
# type). Cold, this takes about 10 CPU-minutes.
SLOW_CASES = [[name, D, "bf16", "all"] for name in KERNELS for D in (64, 128)]
SLOW_CASES += [[name, D, "fp32", "largest"] for name in KERNELS for D in (64, 128)]
SLOW_CASES += [[name, D, "bf16", "all", "gated"] for name in KERNELS for D in (64, 128)]
SLOW_CASES += [[name, D, "fp32", "largest", "gated"] for name in KERNELS for D in (64, 128)]


@pytest.fixture(scope="module")
def default_report():
    return compile_in_child(DEFAULT_CASES)


@pytest.mark.parametrize("case", DEFAULT_CASES, ids=key)
def test_kernel_compiles_and_fits(default_report, case):
    """bf16 inputs (the training path) at D = 64 and 128, the config with the most shared memory."""
    assert default_report[key(case)] == "ok", default_report[key(case)]


@pytest.mark.slow
def test_every_config_and_dtype_compiles_and_fits():
    report = compile_in_child(SLOW_CASES)
    failures = {case: result for case, result in report.items() if result != "ok"}
    assert not failures, failures


if __name__ == "__main__":
    results = {}
    for case in json.loads(sys.argv[1]):
        try:
            compile_case(*case)
            results[key(case)] = "ok"
        except Exception as error:  # reported to the parent test, which fails with this text
            results[key(case)] = f"{type(error).__name__}: {str(error)[-1500:]}"
    print(json.dumps(results))
