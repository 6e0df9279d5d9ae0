"""One GPU check for a machine with a CUDA device: ``make gpu-check`` \
(``python -m recall_lm.evals.bench.gpu_check``).

1. every kernel test on the GPU, compiled by Triton (not its CPU interpreter): ``pytest -m "slow or not
   slow" tests/kernels`` with ``TRITON_INTERPRET=0`` (not the ahead-of-time compile tests: the GPU compiles),
   and the Mamba-3 layer against fla's, whose forward runs on CUDA only (it skips, saying so, where
   ``mamba_ssm`` is not installed);
2. the kernel benchmarks with their CUDA rows beside fla's (``recall_lm.evals.bench.kernels``,
   ``recall_lm.evals.bench.swa``), and the delta rules again at fla's README shape (B 8, H 32, D 128);
3. a dated markdown report, ``evals/results/gpu/<date>-<device>.md``: the device, the test summary and
   its failures, the benchmark tables, and the wall time of each part.

It is sized for a borrowed device with a 15-minute budget: each part has its own time limit
(``--test-timeout`` 210 s, ``--bench-timeout`` 90 s for each of three benchmarks: 8 minutes at most) so
that it fits an H100 or H200 borrowed for 15 minutes and can be run twice. A part that times out is
reported as such; the report is always written.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from recall_lm.evals.common import ROOT

RESULTS = ROOT / "evals" / "results" / "gpu"


def run_part(name: str, cmd: list[str], timeout: int, env: dict) -> dict:
    """Run one part; its output, exit code (124 on timeout) and wall time."""
    start = time.time()
    try:
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        code, out = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as timeout_error:
        code = 124
        out = (
            (timeout_error.stdout or b"").decode(errors="replace")
            if isinstance(timeout_error.stdout, bytes)
            else (timeout_error.stdout or "")
        )
        out += f"\n[{name}: stopped after {timeout} s]"
    seconds = time.time() - start
    print(f"{name}: exit {code} in {seconds:.0f} s", flush=True)
    return {"name": name, "cmd": " ".join(cmd), "code": code, "out": out, "seconds": seconds}


def test_summary(out: str) -> list[str]:
    """pytest's failure lines and its closing summary line."""
    lines = [line for line in out.splitlines() if line.startswith(("FAILED", "ERROR"))]
    closing = [line for line in out.splitlines() if re.search(r"\d+ (passed|failed)", line)]
    return lines + closing[-1:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test-timeout", type=int, default=210, help="seconds for the kernel tests")
    parser.add_argument("--bench-timeout", type=int, default=90, help="seconds for each benchmark")
    parser.add_argument("--out", type=Path, default=None, help="report path (default: evals/results/gpu/...)")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print(
            "error: make gpu-check needs a CUDA device (torch.cuda.is_available() is False)", file=sys.stderr
        )
        return 2
    device = torch.cuda.get_device_name(0)
    env = dict(os.environ, TRITON_INTERPRET="0", WANDB_MODE="disabled", HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1")
    started = time.time()
    # Most of the tests' time on a fresh machine is Triton compiling each kernel specialisation on the host
    # CPU: pytest-xdist spreads the tests (and so the compiles) over the host's cores.
    workers = ["-n", str(min(8, os.cpu_count() or 1))] if importlib.util.find_spec("xdist") else []
    parts = [
        run_part(
            "kernel tests on the GPU",
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-m",
                "slow or not slow",
                "tests/kernels",
                "tests/layers/test_mamba3.py::test_matches_fla_mamba3_on_cuda",  # fla: CUDA only
                "tests/layers/test_loglinear_mamba2.py::test_matches_fla_loglinear_mamba2_on_cuda",
                "--ignore-glob=*_aot.py",  # the GPU compiles them for real
                "-p",
                "no:cacheprovider",
                *workers,
            ],
            args.test_timeout,
            env,
        ),
        run_part(
            "bench_kernels",
            [
                sys.executable,
                "-m",
                "recall_lm.evals.bench.kernels",
                "--device",
                "cuda",
                "--out",
                str(RESULTS / "bench_kernels_cuda.md"),
            ],
            args.bench_timeout,
            env,
        ),
        run_part(
            "bench_kernels at fla's README shape",
            [  # B 8, H 32, D 128: beside fla's own published rows
                sys.executable,
                "-m",
                "recall_lm.evals.bench.kernels",
                "--device",
                "cuda",
                "--B",
                "8",
                "--H",
                "32",
                "--D",
                "128",
                "--T",
                "2048",
                "8192",
                "--sections",
                "Delta rules",
                "--out",
                str(RESULTS / "bench_delta_cuda_fla_shape.md"),
            ],
            args.bench_timeout,
            env,
        ),
        run_part("bench_swa", [sys.executable, "-m", "recall_lm.evals.bench.swa"], args.bench_timeout, env),
    ]
    stamp = datetime.datetime.now().strftime("%Y-%m-%d")
    slug = re.sub(r"[^A-Za-z0-9]+", "-", device).strip("-")
    out = args.out or RESULTS / f"{stamp}-{slug}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# GPU check, {stamp}",
        "",
        f"- device: {device}; torch {torch.__version__}, CUDA {torch.version.cuda}",
        f"- command: `make gpu-check` ({time.time() - started:.0f} s in all)",
        "",
    ]
    for part in parts:
        lines += [
            f"## {part['name']}: exit {part['code']}, {part['seconds']:.0f} s",
            "",
            f"`{part['cmd']}`",
            "",
        ]
        body = (
            test_summary(part["out"])
            if part["name"].startswith("kernel tests")
            else part["out"].splitlines()[-80:]
        )
        lines += ["```", *body, "```", ""]
    out.write_text("\n".join(lines))
    print(f"wrote {out}")
    return 0 if all(p["code"] == 0 for p in parts) else 1


if __name__ == "__main__":
    sys.exit(main())
