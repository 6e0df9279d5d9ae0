"""Sliding-window attention benchmark: our backends against full causal attention (SDPA).

``swa_section()`` returns a markdown table (a list of lines, header first) for the combined
kernel report in ``evals/bench/kernels.py``. Run standalone to print it and save it with the
machine details: ``python -m recall_lm.evals.bench.swa`` writes ``evals/results/bench_swa_<device>.md``.

CPU (fp32): torch backend vs ``scaled_dot_product_attention(is_causal=True)``.
CUDA (bf16), in addition: the Triton backend, SDPA (flash), and fla's ``parallel_attn`` /
flash-attn's ``flash_attn_func`` with a window when they are importable.
"""
from __future__ import annotations

import argparse
import datetime
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from recall_lm.evals.bench.kernels import Case, Settings, time_cases
from recall_lm.evals.common import ROOT, cpu_name
from recall_lm.kernels.swa import sliding_window_attention

B, H, D = 2, 4, 64
SEQ_LENS = (2048, 8192)
WINDOWS = (64, 512)


def _sdpa(q, k, v, window):
    """Full causal attention (ignores the window): the baseline SWA must beat at long T."""
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                          is_causal=True).transpose(1, 2)


def _optional_cuda_impls() -> dict:
    """Third-party window attention available on this machine: name -> fn(q, k, v, window)."""
    impls = {}
    try:
        from fla.ops.attn import parallel_attn

        impls["fla parallel_attn"] = lambda q, k, v, w: parallel_attn(q, k, v, window_size=w)
    except Exception:  # not installed or incompatible: the row is simply left out
        pass
    try:
        from flash_attn import flash_attn_func

        impls["flash-attn"] = lambda q, k, v, w: flash_attn_func(q, k, v, causal=True, window_size=(w - 1, 0))
    except Exception:
        pass
    return impls


def _swa(backend: str):
    return lambda q, k, v, w: sliding_window_attention(q, k, v, w, backend=backend)


def _implementations(device: torch.device) -> list:
    """(name, dtype, fn(q, k, v, window), depends on window) for this device."""
    if device.type != "cuda":
        return [("swa torch", torch.float32, _swa("torch"), True),
                ("sdpa causal", torch.float32, _sdpa, False)]
    impls = [
        ("swa triton", torch.bfloat16, _swa("triton"), True),
        ("swa torch", torch.bfloat16, _swa("torch"), True),
        ("sdpa causal (flash)", torch.bfloat16, _sdpa, False),
    ]
    impls += [(name, torch.bfloat16, fn, True) for name, fn in _optional_cuda_impls().items()]
    return impls


def _inputs(T: int, dtype, device):
    def make():
        gen = torch.Generator(device=device).manual_seed(0)
        return tuple(torch.randn(B, T, H, D, device=device, dtype=dtype, generator=gen) for _ in range(3))

    return make


def swa_section(device: str | torch.device | None = None, seq_lens=SEQ_LENS, windows=WINDOWS,
                repeats: int | None = None) -> list[str]:
    """Markdown table lines (header, separator, one row per implementation / T / w).

    Times are medians in ms of the forward (no grad) and of forward + backward, every implementation and
    window at one T timed in the same interleaved rounds (``recall_lm.evals.bench.kernels.time_cases``);
    "vs SDPA" is the SDPA fwd+bwd time divided by this row's. Shapes: q, k, v [B=2, T, H=4, D=64].
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    repeats = repeats or (20 if device.type == "cuda" else 3)
    rows = ["| device | dtype | impl | T | w | fwd ms | fwd+bwd ms | vs SDPA (fwd+bwd) |",
            "|---|---|---|---:|---:|---:|---:|---:|"]
    settings = Settings(device, list(seq_lens), repeats=repeats, warmup=1)
    for T in seq_lens:
        cases, meta = [], []
        for name, dtype, fn, windowed in _implementations(device):
            for window in (windows if windowed else [None]):
                cases.append(Case(name, name, _inputs(T, dtype, device),
                                  lambda q, k, v, _fn=fn, _w=window or T: (_fn(q, k, v, _w),)))
                meta.append((name, dtype, window))
        errors = []  # e.g. out of memory: reported in the row instead of aborting the table
        timed = time_cases(cases, settings, errors)
        results = [(name if error is None else f"{name} ({type(error).__name__})", dtype, window, fwd, both)
                   for (name, dtype, window), (fwd, both), error in zip(meta, timed, errors)]
        sdpa = next((r[4] for r in results if r[0].startswith("sdpa")), float("nan"))
        for name, dtype, window, fwd, both in results:
            dt = str(dtype).replace("torch.", "")
            w = "all (causal)" if window is None else str(window)
            rows.append(f"| {device.type} | {dt} | {name} | {T} | {w} | {fwd:.1f} | {both:.1f} "
                        f"| {sdpa / both:.2f}x |")
    return rows


def machine_description(device: torch.device) -> list[str]:
    """Date, torch version, processor and threads (and GPU name on CUDA), as markdown bullets."""
    cpu = cpu_name()
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    lines = [f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
             f"- torch {torch.__version__}, CPU: {cpu} ({os.cpu_count()} logical cores), "
             f"torch threads: {torch.get_num_threads()}",
             f"- load average before the run (1/5/15 min): {load}"]
    if device.type == "cuda":
        lines.append(f"- GPU: {torch.cuda.get_device_name(device)}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--out", default=None,
                        help="markdown file (default: evals/results/bench_swa_<device>.md)")
    args = parser.parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    text = "\n".join(
        [
            f"# Sliding-window attention benchmark ({device.type})",
            "",
            *machine_description(device),
            f"- q, k, v [B={B}, T, H={H}, D={D}]; median of interleaved rounds; "
            "SDPA is full causal attention",
            "",
            *swa_section(device),
            "",
        ]
    )
    print(text)
    out = Path(args.out or ROOT / "evals" / "results" / f"bench_swa_{device.type}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
