"""The delta-rule families' Triton kernels (gated delta rule, DPLR) compile for sm_90 and sm_80 at GPU sizes
and fit in shared memory (see tests/kernels/aot.py). Run in a child process with the interpreter off:
``python tests/kernels/test_delta_aot.py [--all]``. The default test compiles the gated delta rule's
kernels at their widest blocks (K = V = 128, with the decay: the most shared memory) and the DPLR rule's
scans and chunk-local backward; the slow one every kernel and variant. (The DPLR score matrices are
gated linear attention's kernels, compiled in test_gla_aot.py.)"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _ptrs(*names: str) -> dict:
    return {name: "*fp32" for name in names}


def compile_delta(K: int, V: int, gated: bool) -> int:
    """The gated delta rule's six kernels at one width, with or without the decay."""
    from recall_lm.kernels.delta import triton_local, triton_scan
    from tests.kernels.aot import assert_compiles_and_fits

    BK, BV = triton_scan._blocks(K, V)
    scan = dict(K=K, V=V, C=64, BK=BK, BV=BV, HAS_DECAY=gated, DOT_PREC=triton_scan.DOT_PRECISION)
    assert_compiles_and_fits(triton_scan.delta_scan_fwd_kernel,
                             {**_ptrs("w", "u", "kd", "decay", "h0", "states", "v_new", "ht"), "NT": "i32"},
                             {**scan, "USE_H0": True}, **triton_scan.LAUNCH)
    assert_compiles_and_fits(
        triton_scan.delta_scan_bwd_kernel,
        {**_ptrs("w", "kd", "decay", "dv_out", "ds_out", "dht", "dh_after", "dv_new", "dh0"), "NT": "i32"},
        {**scan, "USE_DHT": True},
        **triton_scan.LAUNCH,
    )
    local = dict(K=K, V=V, C=64, BK=BK, BV=BV, HAS_G=gated, DOT_PREC=triton_scan.DOT_PRECISION)
    assert_compiles_and_fits(
        triton_local.delta_local_fwd_kernel,
        _ptrs("k", "v", "beta", "g", "w", "u", "kd", "decay"),
        local,
        **triton_local.LAUNCH,
    )
    assert_compiles_and_fits(triton_local.delta_output_kernel,
                             {**_ptrs("q", "k", "g", "states", "v_new", "o"), "scale": "fp32"}, local,
                             **triton_local.LAUNCH)
    assert_compiles_and_fits(triton_local.delta_output_bwd_kernel,
                             {**_ptrs("q", "k", "g", "do", "dv_out", "ds_out"), "scale": "fp32"}, local,
                             **triton_local.LAUNCH)
    assert_compiles_and_fits(
        triton_local.delta_local_bwd_kernel,
        {
            **_ptrs(
                "q",
                "k",
                "v",
                "beta",
                "g",
                "states",
                "v_new",
                "do",
                "dv_new",
                "dh_after",
                "dq",
                "dk",
                "dv",
                "dbeta",
                "dg",
            ),
            "scale": "fp32",
        },
        {**local, "BV": triton_local.local_bwd_block_v(BK, BV)},
        **triton_local.BWD_LAUNCH,
    )
    return 6


def compile_dplr(every_kernel: bool) -> int:
    """The DPLR rule's kernels at its widest keys (K = 64 = MAX_K, V = 128): the two scans and the chunk-local
    backward (the most shared memory) always, the other chunk-local kernels with ``every_kernel``."""
    from recall_lm.kernels.dplr import triton_local as dplr_local
    from recall_lm.kernels.dplr import triton_scan as dplr_scan
    from tests.kernels.aot import assert_compiles_and_fits

    BK, BV = dplr_scan._blocks(dplr_scan.MAX_K, 128)
    common = dict(K=dplr_scan.MAX_K, V=128, C=64, BK=BK, BV=BV, DOT_PREC=dplr_scan.DOT_PRECISION)
    assert_compiles_and_fits(
        dplr_scan.dplr_scan_fwd_kernel,
        {**_ptrs("w", "u", "kd", "bd", "v", "decay", "h0", "states", "v2", "ht"), "NT": "i32"},
        common,
    )
    assert_compiles_and_fits(
        dplr_scan.dplr_scan_bwd_kernel,
        {**_ptrs("w", "bd", "decay", "dv2_out", "ds_out", "dht", "dh_after", "dv2", "dh0"), "NT": "i32"},
        common,
    )
    assert_compiles_and_fits(
        dplr_local.dplr_local_bwd_kernel,
        {
            **_ptrs(
                "q",
                "k",
                "v",
                "a",
                "b",
                "G",
                "Gx",
                "A_ab",
                "A_ak",
                "states",
                "v2",
                "do",
                "dv2",
                "dh_after",
                "dv_out",
                "dA_ab",
                "dA_ak",
                "dA_qk",
                "dA_qb",
                "dv",
                "dq",
                "dk",
                "da",
                "db",
                "dG",
                "dGx",
            ),
            "scale": "fp32",
        },
        common,
        **dplr_local.BWD_LAUNCH,
    )
    if not every_kernel:
        return 3
    assert_compiles_and_fits(
        dplr_local.dplr_solve_fwd_kernel,
        _ptrs("k", "v", "a", "b", "G", "Gx", "A_ab", "A_ak", "w", "u", "kd", "bd", "decay"),
        common,
        **dplr_local.LAUNCH,
    )
    assert_compiles_and_fits(
        dplr_local.dplr_output_kernel,
        {**_ptrs("q", "G", "v", "A_qk", "A_qb", "states", "v2", "o"), "scale": "fp32"},
        common,
        **dplr_local.LAUNCH,
    )
    assert_compiles_and_fits(
        dplr_local.dplr_output_bwd_kernel,
        {**_ptrs("q", "G", "A_qk", "A_qb", "do", "dv2_out", "ds_out", "dv_out"), "scale": "fp32"},
        common,
        **dplr_local.LAUNCH,
    )
    return 6


def compile_all(every_variant: bool) -> int:
    variants = [(128, 128, True)] + (
        [(128, 128, False), (64, 64, True), (64, 64, False)] if every_variant else []
    )
    return sum(compile_delta(*v) for v in variants) + compile_dplr(every_variant)


def _run(*flags: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    result = subprocess.run([sys.executable, "-m", __name__, *flags], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=2400)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-8000:]
    assert "compiled" in result.stdout


def test_delta_kernels_compile_for_sm90_sm80_at_the_widest_blocks():
    _run()


@pytest.mark.slow
def test_every_delta_kernel_variant_compiles_for_sm90_sm80():
    _run("--all")


if __name__ == "__main__":
    print(f"compiled {compile_all('--all' in sys.argv)} kernels")
