"""Train every MQAR config on the shared setting and write the README's table.

    # all configs/mqar/*.yaml, one after another
    python -m recall_lm.evals.sweeps.mqar_table
    python -m recall_lm.evals.sweeps.mqar_table --jobs 2 configs/mqar/attention.yaml configs/mqar/based.yaml
    # after --: arguments for every train.py run
    python -m recall_lm.evals.sweeps.mqar_table -- --trainer.max_epochs 2
    # rebuild the table from finished runs
    python -m recall_lm.evals.sweeps.mqar_table --collect
    # configs/zoology/*.yaml (Zoology's protocol, S1)
    python -m recall_lm.evals.sweeps.mqar_table --set zoology

Each config runs as its own ``train.py fit`` process through evals/sweeps/train_runs.py (``--jobs`` at a
time, torch threads split between them); the table (markdown and CSV under evals/results/) holds the final
accuracy per test slice, the decoding state size at the longest test length, parameters and wall time.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from datetime import date
from pathlib import Path

import torch

from recall_lm.evals.common import ROOT, cpu_name
from recall_lm.evals.sweeps.train_runs import TrainRun, run_many

RESULTS = ROOT / "evals" / "results"


SETS = {  # --set: the config folder, the output name, and a sentence on its data and trainer settings
    "mqar": (
        "configs/mqar",
        "mqar_cpu",
        "MQAR on the shared CPU setting (configs/mqar/_data.yaml, _trainer.yaml)",
    ),
    "zoology": (
        "configs/zoology",
        "mqar_zoology_cpu",
        "MQAR with Zoology's protocol at its setting S1 (configs/zoology/_s1.yaml, _trainer.yaml)",
    ),
}


def scratch_dir(name: str) -> Path:
    """Where the per-config results of table ``name`` live (mqar_cpu keeps its historical folder)."""
    return RESULTS / ("mqar_runs" if name == "mqar_cpu" else f"{name}_runs")


def run_all(configs: list[Path], jobs: int, extra: list[str], name: str = "mqar_cpu") -> list[dict]:
    """Train each config (``extra`` appended to its train.py arguments); one failing config is
    reported and skipped, the others still make the table."""
    scratch = scratch_dir(name)
    runs = [TrainRun(["--config", str(c), *extra], scratch / (c.stem + ".json"), scratch / (c.stem + ".log"))
            for c in configs]
    return run_many(runs, jobs)  # in the order given: put the slowest configs first


def write_table(rows: list[dict], name: str, setting: str = SETS["mqar"][2]) -> Path:
    slices = sorted({k[len("val/acc/"):] for r in rows for k in r["metrics"] if k.startswith("val/acc/")},
                    key=lambda s: (int(s.split("_")[0][1:]), int(s.split("_")[1][2:])))
    cpu = cpu_name()
    header = ["config", "mixer", "params", f"state (numbers, L={rows[0]['state_at_len']})", "val/acc",
              *[f"acc {s}" for s in slices], "steps", "time (s)"]
    command = " ".join(["python -m recall_lm.evals.sweeps.mqar_table", *sys.argv[1:]])
    lines = [
        f"{setting}, measured {date.today()} on {cpu}, {os.cpu_count()} cores, torch {torch.__version__}; "
        f"command: `{command}`.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    with open(RESULTS / f"{name}.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for r in rows:
            m = r["metrics"]
            cells = [
                r["config"],
                r["mixer"],
                f"{r['params']:,}",
                f"{r['state_size']:,}",
                f"{m.get('val/acc', float('nan')):.3f}",
                *[f"{m.get('val/acc/' + s, float('nan')):.3f}" for s in slices],
                str(r["steps"]),
                str(r["seconds"]),
            ]
            writer.writerow(cells)
            lines.append("| " + " | ".join(cells) + " |")
    path = RESULTS / f"{name}.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("configs", nargs="*", type=Path, help="default: every config of --set")
    parser.add_argument("--set", choices=sorted(SETS), default="mqar",
                        help="configs/mqar (the project's recipe) or configs/zoology (Zoology's protocol)")
    parser.add_argument("--jobs", type=int, default=1, help="configs trained at the same time")
    parser.add_argument(
        "--name", default=None, help="output file stem under evals/results/ (default: the set's)"
    )
    parser.add_argument(
        "--collect",
        action="store_true",
        help="no training: build the table from the results already in evals/results/<name>_runs/",
    )
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args, extra = parser.parse_args(argv[:split]), argv[split + 1 :]  # after --: train.py arguments
    folder, default_name, setting = SETS[args.set]
    name = args.name or default_name
    configs = [c.resolve() for c in args.configs] or sorted(
        p for p in (ROOT / folder).glob("*.yaml") if not p.name.startswith("_"))
    missing = [str(c) for c in configs if not c.exists()]
    if missing:
        parser.error(f"config file(s) not found: {missing}")
    if args.collect:
        found = [scratch_dir(name) / (c.stem + ".json") for c in configs]
        rows = [json.loads(p.read_text()) for p in found if p.exists()]
    else:
        rows = run_all(configs, args.jobs, extra, name)
    if rows:
        print(write_table(rows, name, setting).read_text())
    if len(rows) < len(configs):
        what = "have no results yet" if args.collect else "failed"
        sys.exit(f"{len(configs) - len(rows)} of {len(configs)} configs {what}")


if __name__ == "__main__":
    main()
