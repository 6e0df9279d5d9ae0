"""What reading twice buys: train each mixer on MQAR with the context shown once and shown twice.

    # every configs/mqar/*.yaml, 2 jobs
    python -m recall_lm.evals.probes.jrt
    python -m recall_lm.evals.probes.jrt --jobs 2 configs/mqar/based.yaml configs/mqar/rwkv6.yaml
    # rebuild the table from finished runs
    python -m recall_lm.evals.probes.jrt --collect
    # no training: read twice at test time
    python -m recall_lm.evals.probes.jrt --inference runs/mqar/based runs/mqar/rwkv6

"Just read twice" (Arora et al., 2024, "Just read twice: closing the recall gap for recurrent
language models") repeats the context before the questions, so that a fixed-size recurrent state,
on its second read, already knows everything that will have to be stored. Here each mixer config
(model block of configs/mqar/<name>.yaml) is trained twice on the JRT probe's MQAR data
(configs/probes/_jrt_x1.yaml, _jrt_x2.yaml: vocabulary 256, 8 key-value pairs, the same 48-token
query region after a context read ``num_passes`` = 1 or 2 times, 400 steps of 64 by default) and the table
reports the validation accuracy of both and the gain. Every run is a ``train.py fit`` subprocess
(through ``recall_lm.evals.sweeps.mqar_table --single``) with ``--threads`` torch threads; results land in
evals/results/probes/jrt_cpu.{csv,md}, per-run JSON and logs in evals/results/probes/jrt_runs/.

``--inference CKPT...`` trains nothing: it evaluates already trained checkpoints (trained with one
pass) on MQAR read once and read twice, with the same query region after the context
(``--region`` tokens, so L = 2·kv·passes + region), and writes evals/results/probes/jrt_inference.{csv,md}.
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

RESULTS = ROOT / "evals" / "results" / "probes"
PROBES = ROOT / "configs" / "probes"
PASSES = (1, 2)


def train_args(config: Path, passes: int, extra: list[str]) -> list[str]:
    """train.py arguments after ``--config config``: the JRT data/trainer fragments, vocabulary 256."""
    run_dir = ROOT / "runs" / "probes" / "jrt" / f"{config.stem}_x{passes}"
    return ["--data", str(PROBES / f"_jrt_x{passes}.yaml"), "--trainer", str(PROBES / "_jrt_trainer.yaml"),
            "--model.architecture.vocab_size", "256", "--trainer.default_root_dir", str(run_dir), *extra]


def training_runs(configs: list[Path], extra: list[str]) -> list[TrainRun]:
    """One run per (config, passes), slowest first (MoM) so that the job slots finish together; results and
    logs in evals/results/probes/jrt_runs/."""
    scratch = RESULTS / "jrt_runs"
    order = sorted(configs, key=lambda c: (not c.stem.startswith("mom"), c.stem))
    return [
        TrainRun(
            args=["--config", str(c), *train_args(c, p, extra)],
            result=scratch / f"{c.stem}_x{p}.json",
            log=scratch / f"{c.stem}_x{p}.log",
            meta={"jrt": [c.stem, p]},
        )
        for c in order
        for p in PASSES
    ]


def write_table(
    rows: dict[tuple[str, int], dict], configs: list[Path], command: str, threads: int, jobs: int
) -> Path:
    """rows[(config stem, passes)] -> the markdown/CSV table with the gain (x2 − x1) per mixer."""
    cpu = cpu_name()
    header = ["config", "mixer", "params", "state x1 (L=64)", "state x2 (L=80)", "acc x1", "acc x2",
              "gain (x2 − x1)", "steps", "time x1 (s)", "time x2 (s)"]
    steps = "/".join(sorted({str(r.get("steps")) for r in rows.values()})) or "?"
    lines = [
        f"JRT probe (evals/probes/jrt.py), measured {date.today()} on {cpu}, {os.cpu_count()} cores "
        "(load average "
        f"{os.getloadavg()[0]:.1f} at the end), torch {torch.__version__}, {jobs} jobs at a time with "
        f"OMP_NUM_THREADS={threads} each.",
        "",
        "Setting: MQAR, vocabulary 256, 8 key-value pairs, a 48-token query region after the context; the "
        "context is read once (x1, L = 64) or twice (x2, L = 80: `num_passes=2`). Model block of each "
        f"configs/mqar/<name>.yaml (2 layers, d_model 64, no MLP, lr 3e-3), {steps} steps of 64 examples "
        "(configs/probes/_jrt_*.yaml), one seed, no learning-rate sweep; accuracy on 500 held-out examples.",
        "",
        f"Command: `{command}`",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]

    def fmt(x):
        return "—" if x is None else f"{x:.3f}"

    with open(RESULTS / "jrt_cpu.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for config in configs:
            one, two = rows.get((config.stem, 1)), rows.get((config.stem, 2))
            if one is None and two is None:
                continue
            any_row = one or two
            acc1 = one["metrics"].get("val/acc") if one else None
            acc2 = two["metrics"].get("val/acc") if two else None
            gain = acc2 - acc1 if acc1 is not None and acc2 is not None else None
            cells = [any_row["config"], any_row["mixer"], f"{any_row['params']:,}",
                     f"{one['state_size']:,}" if one else "—", f"{two['state_size']:,}" if two else "—",
                     fmt(acc1), fmt(acc2), "—" if gain is None else f"{gain:+.3f}", str(any_row["steps"]),
                     str(one["seconds"]) if one else "—", str(two["seconds"]) if two else "—"]
            writer.writerow(cells)
            lines.append("| " + " | ".join(cells) + " |")
    path = RESULTS / "jrt_cpu.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def inference_gain(model, kvs: list[int], region: int = 48, num_examples: int = 300,
                   batch_size: int = 64) -> list[dict]:
    """Per kv: MQAR accuracy of ``model`` read once (L = 2·kv + region) and twice (L = 4·kv + region)."""
    from recall_lm.evals.probes.mqar_eval import evaluate_grid

    rows = []
    for kv in kvs:
        acc = {p: evaluate_grid(model, [2 * kv * p + region], [kv], num_examples, batch_size, num_passes=p)[0]
               for p in PASSES}
        rows.append({"num_kv_pairs": kv, "L x1": 2 * kv + region, "L x2": 4 * kv + region,
                     "acc x1": acc[1]["accuracy"], "acc x2": acc[2]["accuracy"],
                     "gain": acc[2]["accuracy"] - acc[1]["accuracy"], "status": acc[2]["status"]})
    return rows


def run_inference(ckpts: list[str], kvs: list[int], region: int, num_examples: int, command: str,
                  out: Path | None = None) -> Path:
    from recall_lm.evals.probes.report import load_checkpoint_model, write_rows

    rows = []
    for ckpt in ckpts:
        model, _ = load_checkpoint_model(ckpt)
        mixer = model.config.mixer if isinstance(model.config.mixer, str) else "+".join(model.config.mixer)
        for row in inference_gain(model, kvs, region, num_examples):
            rows.append({"checkpoint": ckpt, "mixer": mixer, **row})
            print(rows[-1], flush=True)
    columns = ["checkpoint", "mixer", "num_kv_pairs", "L x1", "L x2", "acc x1", "acc x2", "gain", "status"]
    title = (f"Reading twice at test time (no JRT training), measured {date.today()}: MQAR of checkpoints "
             f"trained with one pass, evaluated with the context read once (x1) and twice (x2), the same "
             f"{region}-token query region after it, {num_examples} examples per cell. Command: `{command}`")
    return write_rows(rows, columns, out or RESULTS / "jrt_inference", title)[1]


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("configs", nargs="*", type=Path, help="default: every configs/mqar/*.yaml")
    parser.add_argument("--jobs", type=int, default=2, help="trainings at the same time")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each training")
    parser.add_argument(
        "--collect", action="store_true", help="no training: table from evals/results/probes/jrt_runs/"
    )
    parser.add_argument(
        "--inference", nargs="+", metavar="CKPT", help="no training: read-twice gain of checkpoints"
    )
    parser.add_argument("--kv", type=int, nargs="+", default=[4, 8, 16], help="--inference: key-value pairs")
    parser.add_argument("--region", type=int, default=48, help="--inference: query-region tokens")
    parser.add_argument("--num-examples", type=int, default=300, help="--inference: examples per cell")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="--inference: write <out>.csv and <out>.md (default: evals/results/probes/jrt_inference)",
    )
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    args, extra = parser.parse_args(argv[:split]), argv[split + 1 :]  # after --: train.py arguments
    if args.jobs < 1 or args.threads < 1:
        parser.error("--jobs and --threads must be ≥ 1")
    configs = [c.resolve() for c in args.configs] or sorted(
        p for p in (ROOT / "configs" / "mqar").glob("*.yaml") if not p.name.startswith("_"))
    missing = [str(c) for c in configs if not c.is_file()]
    if missing:
        parser.error(f"config file(s) not found: {missing}")
    command = "python -m recall_lm.evals.probes.jrt " + " ".join(argv)
    if args.inference:
        text = run_inference(
            args.inference, args.kv, args.region, args.num_examples, command.strip(), args.out
        )
        print(text.read_text())
        return
    if args.collect:
        rows = {}
        for c in configs:
            for p in PASSES:
                found = RESULTS / "jrt_runs" / f"{c.stem}_x{p}.json"
                if found.exists():
                    rows[(c.stem, p)] = json.loads(found.read_text())
    else:
        env = dict(os.environ, WANDB_MODE=os.environ.get("WANDB_MODE", "disabled"))
        results = run_many(training_runs(configs, extra), args.jobs, env=env, threads=args.threads)
        rows = {tuple(r.pop("jrt")): r for r in results}
    if rows:
        print(write_table(rows, configs, command.strip(), args.threads, args.jobs).read_text())
    expected = len(configs) * len(PASSES)
    if len(rows) < expected:
        sys.exit(
            f"{expected - len(rows)} of {expected} runs {'have no results' if args.collect else 'failed'}"
        )


if __name__ == "__main__":
    main()
