"""The delta-rule families' Triton kernels (gated delta rule, DPLR) compile for sm_90 and sm_80 at GPU sizes and fit in shared
memory (see tests/kernels/aot.py). Run in a child process with the interpreter off:
``python tests/kernels/test_delta_aot.py``."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def compile_all() -> int:
    from kernels.delta import triton_scan
    from tests.kernels.aot import assert_compiles_and_fits

    n = 0
    for K, V in ((64, 64), (128, 128)):  # K = 128 = triton_scan.MAX_K: the largest blocks
        BK, BV = triton_scan._blocks(K, V)
        for has_decay in (True, False):
            common = dict(K=K, V=V, C=64, BK=BK, BV=BV, HAS_DECAY=has_decay, DOT_PREC=triton_scan.DOT_PRECISION)
            fwd = {n: "*fp32" for n in ("w", "u", "kd", "decay", "h0", "states", "v_new", "ht")}
            assert_compiles_and_fits(triton_scan.delta_scan_fwd_kernel, {**fwd, "NT": "i32"},
                                     {**common, "USE_H0": True})
            bwd = {n: "*fp32" for n in ("w", "kd", "decay", "dv_out", "ds_out", "dht", "dh_after", "dv_new", "dh0")}
            assert_compiles_and_fits(triton_scan.delta_scan_bwd_kernel, {**bwd, "NT": "i32"},
                                     {**common, "USE_DHT": True})
            n += 2
    from kernels.dplr import triton_scan as dplr_scan

    BK, BV = dplr_scan._blocks(dplr_scan.MAX_K, 128)
    common = dict(K=dplr_scan.MAX_K, V=128, C=64, BK=BK, BV=BV, DOT_PREC=dplr_scan.DOT_PRECISION)
    fwd = {n: "*fp32" for n in ("w", "u", "kd", "bd", "v", "decay", "h0", "states", "v2", "ht")}
    assert_compiles_and_fits(dplr_scan.dplr_scan_fwd_kernel, {**fwd, "NT": "i32"}, common)
    bwd = {n: "*fp32" for n in ("w", "bd", "decay", "dv2_out", "ds_out", "dht", "dh_after", "dv2", "dh0")}
    assert_compiles_and_fits(dplr_scan.dplr_scan_bwd_kernel, {**bwd, "NT": "i32"}, common)
    return n + 2


def test_delta_kernels_compile_for_sm90_sm80():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run([sys.executable, str(Path(__file__).resolve())], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-8000:]
    assert "compiled" in result.stdout


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    print(f"compiled {compile_all()} kernels")
