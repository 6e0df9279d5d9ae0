"""Memory and time of the LM head + cross-entropy, full logits vs chunked: \
``python -m recall_lm.evals.bench.loss``.

Each variant (``full``: ``F.cross_entropy(hidden @ W.T, labels)``; ``chunked``:
``recall_lm.models.linear_cross_entropy`` with ``--chunk-rows``) runs forward + backward in its own
process; its peak memory is the process's peak resident set (``ru_maxrss``) less the peak after building
the inputs, on CPU, or ``torch.cuda.max_memory_allocated`` on CUDA. Writes
``evals/results/bench_loss_<device>.md``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from recall_lm.evals.common import ROOT

RESULTS = ROOT / "evals" / "results"


def measure(variant: str, tokens: int, d_model: int, vocab: int, chunk_rows: int, device: str) -> dict:
    """Child side: one forward + backward; returns peak extra memory (MiB) and seconds."""
    import resource

    import torch
    import torch.nn.functional as F

    from recall_lm.models.linear_cross_entropy import linear_cross_entropy

    gen = torch.Generator(device="cpu").manual_seed(0)
    hidden = torch.randn(tokens, d_model, generator=gen).to(device).requires_grad_()
    weight = (torch.randn(vocab, d_model, generator=gen) * 0.02).to(device).requires_grad_()
    labels = torch.randint(0, vocab, (tokens,), generator=gen).to(device)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.max_memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    start = time.perf_counter()
    if variant == "full":
        loss = F.cross_entropy((hidden @ weight.T).float(), labels)
    else:
        loss = linear_cross_entropy(hidden, weight, labels, chunk_rows)[0] / tokens
    loss.backward()
    if cuda:
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    return {"variant": variant, "peak_mib": round(peak, 1), "seconds": round(time.perf_counter() - start, 2),
            "loss": float(loss)}


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096, help="rows: batch × sequence length")
    parser.add_argument("--d-model", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=65536)
    parser.add_argument("--chunk-rows", type=int, default=1024)
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.child:
        print(json.dumps(measure(args.child, args.tokens, args.d_model, args.vocab, args.chunk_rows, device)))
        return None
    if min(args.tokens, args.d_model, args.vocab, args.chunk_rows) < 1:
        parser.error("--tokens, --d-model, --vocab and --chunk-rows must be ≥ 1")
    rows = []
    for variant in ("full", "chunked"):
        cmd = [
            sys.executable,
            "-m",
            "recall_lm.evals.bench.loss",
            "--child",
            variant,
            "--tokens",
            str(args.tokens),
            "--d-model",
            str(args.d_model),
            "--vocab",
            str(args.vocab),
            "--chunk-rows",
            str(args.chunk_rows),
            "--device",
            device,
        ]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    full, chunked = rows
    load = os.getloadavg()[0]
    lines = [
        f"# LM head + cross-entropy memory ({device})",
        "",
        f"`python -m recall_lm.evals.bench.loss {' '.join(sys.argv[1:] if argv is None else argv)}`",
        "",
        f"{datetime.date.today()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        "load average "
        f"{load:.2f}; {args.tokens} tokens, d_model {args.d_model}, vocabulary {args.vocab:,}, chunks of "
        f"{args.chunk_rows} rows; one forward + backward, peak memory beyond the inputs.",
        "",
        "| variant | peak extra memory (MiB) | seconds | loss |",
        "|---|---:|---:|---:|",
        *[f"| {r['variant']} | {r['peak_mib']:,.1f} | {r['seconds']} | {r['loss']:.6f} |" for r in rows],
        "",
        f"The chunked head needs {full['peak_mib'] / max(chunked['peak_mib'], 1e-9):.1f}× less memory "
        f"(the full fp32 logits alone are {args.tokens * args.vocab * 4 / 2**20:,.0f} MiB).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    out = args.out or RESULTS / f"bench_loss_{'cuda' if device.startswith('cuda') else 'cpu'}.md"
    out.write_text(text)
    print(f"wrote {out}")
    return rows


if __name__ == "__main__":
    main()
