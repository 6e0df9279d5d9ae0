"""Train every MQAR config on the shared setting and write the README's table.

    python -m evals.mqar_table                       # all configs/mqar/*.yaml, one after another
    python -m evals.mqar_table --jobs 2 configs/mqar/attention.yaml configs/mqar/based.yaml
    python -m evals.mqar_table -- --trainer.max_epochs 2      # after --: arguments for every train.py run
    python -m evals.mqar_table --collect                     # rebuild the table from finished runs

Each config runs as its own ``train.py fit`` process (``--jobs`` at a time, torch threads split
between them); the table (markdown and CSV under evals/results/) holds the final accuracy per test
slice, the decoding state size at the longest test length, parameters and wall time.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "evals" / "results"


def run_one(config: Path, out_json: Path, extra: list[str]) -> None:
    """Child process: train one config, write its final metrics and sizes to ``out_json``."""
    sys.path.insert(0, str(ROOT))
    import train

    start = time.time()
    cli = train.main(["fit", "--config", str(config), "--trainer.enable_progress_bar=false", *extra])
    model = cli.model.model
    datamodule = cli.datamodule
    longest = max(s.input_seq_len for s in datamodule.test_slices)
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("val/acc")}
    out_json.write_text(json.dumps({
        "config": str(config.relative_to(ROOT)),
        "mixer": model.config.mixer if isinstance(model.config.mixer, str) else "+".join(model.config.mixer),
        "d_model": model.config.d_model,
        "params": model.num_parameters(),
        "state_size": model.state_size(longest),
        "state_at_len": longest,
        "steps": cli.trainer.global_step,
        "seconds": round(time.time() - start, 1),
        "metrics": metrics,
    }))


def run_all(configs: list[Path], jobs: int, extra: list[str]) -> list[dict]:
    threads = max(1, (os.cpu_count() or 1) // jobs)
    scratch = RESULTS / "mqar_runs"
    scratch.mkdir(parents=True, exist_ok=True)

    def launch(config: Path) -> dict | None:
        out = scratch / (config.stem + ".json")
        out.unlink(missing_ok=True)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), WANDB_MODE=os.environ.get("WANDB_MODE", "offline"))
        cmd = [sys.executable, "-m", "evals.mqar_table", "--single", str(config), "--json", str(out), "--", *extra]
        log = scratch / (config.stem + ".log")
        with open(log, "w") as fh:
            code = subprocess.call(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
        if code != 0 or not out.exists():
            print(f"{config} failed (exit {code}); see {log}", file=sys.stderr, flush=True)
            return None
        return json.loads(out.read_text())

    # One failing config is reported and skipped; the others still run and make the table.
    with ThreadPoolExecutor(jobs) as pool:  # in the order given: put the slowest configs first
        return [row for row in pool.map(launch, configs) if row is not None]


def write_table(rows: list[dict], name: str) -> Path:
    slices = sorted({k[len("val/acc/"):] for r in rows for k in r["metrics"] if k.startswith("val/acc/")},
                    key=lambda s: (int(s.split("_")[0][1:]), int(s.split("_")[1][2:])))
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    header = ["config", "mixer", "params", f"state (numbers, L={rows[0]['state_at_len']})", "val/acc",
              *[f"acc {s}" for s in slices], "steps", "time (s)"]
    lines = [
        f"MQAR on the shared CPU setting (configs/mqar/_data.yaml, _trainer.yaml), measured {date.today()} "
        f"on {cpu}, {os.cpu_count()} cores, torch {torch.__version__}; command: `python -m evals.mqar_table`.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    with open(RESULTS / f"{name}.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for r in rows:
            m = r["metrics"]
            cells = [r["config"], r["mixer"], f"{r['params']:,}", f"{r['state_size']:,}", f"{m.get('val/acc', float('nan')):.3f}",
                     *[f"{m.get('val/acc/' + s, float('nan')):.3f}" for s in slices], str(r["steps"]), str(r["seconds"])]
            writer.writerow(cells)
            lines.append("| " + " | ".join(cells) + " |")
    path = RESULTS / f"{name}.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="*", type=Path, help="default: every configs/mqar/*.yaml")
    parser.add_argument("--jobs", type=int, default=1, help="configs trained at the same time")
    parser.add_argument("--name", default="mqar_cpu", help="output file stem under evals/results/")
    parser.add_argument("--collect", action="store_true",
                        help="no training: build the table from the results already in evals/results/mqar_runs/")
    parser.add_argument("--single", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args, extra = parser.parse_args(argv[:split]), argv[split + 1 :]  # after --: train.py arguments
    if args.single:
        run_one(args.single.resolve(), args.json, extra)
        return
    configs = [c.resolve() for c in args.configs] or sorted(
        p for p in (ROOT / "configs" / "mqar").glob("*.yaml") if not p.name.startswith("_"))
    missing = [str(c) for c in configs if not c.exists()]
    if missing:
        parser.error(f"config file(s) not found: {missing}")
    if args.collect:
        found = [RESULTS / "mqar_runs" / (c.stem + ".json") for c in configs]
        rows = [json.loads(p.read_text()) for p in found if p.exists()]
    else:
        rows = run_all(configs, args.jobs, extra)
    if rows:
        print(write_table(rows, args.name).read_text())
    if len(rows) < len(configs):
        what = "have no results yet" if args.collect else "failed"
        sys.exit(f"{len(configs) - len(rows)} of {len(configs)} configs {what}")


if __name__ == "__main__":
    main()
