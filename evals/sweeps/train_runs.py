"""Run ``train.py fit`` as child processes, N at a time, and collect what each run measured.

Shared by evals/sweeps/mqar_table.py and evals/sweeps/sweep.py. Each run is its own process (a crash or a leak
stays in it); the child trains in-process through ``train_cli.main`` and writes one JSON result:

    {"config": "configs/mqar/based.yaml", "mixer": "base_conv+based", "d_model": 64, "params": ...,
     "state_size": <numbers at the longest test length>, "state_at_len": 256,
     "state_sizes": {"64": ..., "256": ...}, "state_bytes": {"64": ..., "256": ...},
     "slice_lengths": {"L64_kv4": 64, ...}, "steps": 891,
     "seconds": 358.1,
     "metrics": {"val/acc": 0.73, "val/acc/L64_kv4": 0.88, "val/loss": 0.9, ...},
     "val_acc_by_epoch": [0.41, 0.73],
     "val_loss_by_step": [[250, 1.3], [500, 0.9]],
     "train_args": [...]}

The JSON is written last, so its presence marks a finished run (the sweep skips those).
Child: ``python -m recall_lm.evals.sweeps.train_runs --json OUT.json -- <train.py fit arguments>``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from recall_lm.evals.common import ROOT


@dataclass
class TrainRun:
    """One ``train.py fit`` run: its arguments (after ``fit``), where its result JSON and log go,
    and ``meta`` merged into the result (e.g. the sweep point that made it)."""

    args: list[str]
    result: Path
    log: Path
    meta: dict = field(default_factory=dict)


def config_of(args: list[str]) -> str | None:
    """The last ``--config`` path in train.py arguments (relative to the repository when inside it)."""
    paths = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--config"]
    paths += [a.split("=", 1)[1] for a in args if a.startswith("--config=")]
    if not paths:
        return None
    path = Path(paths[-1]).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def validation_rows(run_dir: Path, key: str = "val/acc") -> list[tuple[int, float]]:
    """(training steps done, value of ``key``) of each validation in the run's CSV log
    (``<run>/csv/metrics.csv``, whose ``step`` column counts from 0), in order."""
    import csv

    path = run_dir / "csv" / "metrics.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [(int(r["step"]) + 1, float(r[key])) for r in csv.DictReader(fh) if r.get(key)]


def validation_history(run_dir: Path) -> list[float]:
    """val/acc of each validation in the run's CSV log, in order."""
    return [round(v, 4) for _, v in validation_rows(run_dir)]


def train_and_measure(args: list[str], out_json: Path) -> dict:
    """Child side: ``train.py fit <args>`` in this process, then write and return its result."""
    from recall_lm.training import cli as train_cli

    start = time.time()
    cli = train_cli.main(["fit", *args, "--trainer.enable_progress_bar=false"])
    model = cli.model.model
    test_slices = getattr(cli.datamodule, "test_slices", [])
    lengths = sorted({s.seq_len for s in test_slices}) or [getattr(cli.datamodule, "seq_len", 1)]  # text: T
    mixer = model.config.mixer
    result = {
        "config": config_of(args),
        "mixer": mixer if isinstance(mixer, str) else "+".join(mixer),
        "d_model": model.config.d_model,
        "n_layers": model.config.n_layers,
        "params": model.num_parameters(),
        "state_size": model.state_size(lengths[-1]),
        "state_at_len": lengths[-1],
        "state_sizes": {str(n): model.state_size(n) for n in lengths},
        "slice_lengths": {s.name: s.seq_len for s in test_slices},
        "state_bytes": {str(n): model.state_bytes(n) for n in lengths},  # in the parameters' dtype
        "steps": cli.trainer.global_step,
        "seconds": round(time.time() - start, 1),
        "metrics": {k: float(v) for k, v in cli.trainer.callback_metrics.items()
                    if k.startswith(("val/acc", "val/loss"))},
        "val_acc_by_epoch": validation_history(Path(cli.trainer.default_root_dir)),
        "val_loss_by_step": [[step, round(v, 5)]
                             for step, v in validation_rows(Path(cli.trainer.default_root_dir), "val/loss")],
        "train_args": list(args),
    }
    out_json.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_json.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(out_json)  # atomic: a half-written file never marks a run finished
    return result


def threads_per_job(jobs: int) -> int:
    """Torch/OpenMP threads for each of ``jobs`` simultaneous runs: the cores this process may use (its CPU
    affinity, so that ``taskset -c 1 python -m …sweep`` keeps to core 1) split between them."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, jobs))


def running_marker(run: TrainRun) -> Path:
    return run.result.with_name(run.result.stem + ".running")


def is_running(run: TrainRun) -> bool:
    """Whether a live process is training ``run`` now (its ``<result>.running`` file names a live pid),
    so that a second sweep process over the same folder leaves it alone."""
    marker = running_marker(run)
    try:
        pid = int(marker.read_text().split()[0])
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def launch(run: TrainRun, threads: int, env: dict | None = None) -> dict | None:
    """Parent side: train one run in a child process; its result dict (with ``meta``), or None if it
    failed (the reason is in ``run.log``)."""
    run.result.unlink(missing_ok=True)
    run.log.parent.mkdir(parents=True, exist_ok=True)
    roots = [a.split("=", 1)[1] for a in run.args if a.startswith("--trainer.default_root_dir=")]
    stale = Path(roots[-1]) / "checkpoints" if roots else None
    if stale is not None and stale.is_dir():  # an unfinished earlier attempt: this one starts afresh
        shutil.rmtree(stale)
    env = dict(os.environ if env is None else env, OMP_NUM_THREADS=str(threads))
    env.setdefault("WANDB_MODE", os.environ.get("WANDB_MODE", "offline"))
    cmd = [
        sys.executable,
        "-m",
        "recall_lm.evals.sweeps.train_runs",
        "--json",
        str(run.result),
        "--",
        *run.args,
    ]
    with open(run.log, "w") as fh:
        fh.write(" ".join(cmd) + "\n")
        fh.flush()
        child = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
        running_marker(run).write_text(f"{child.pid}\n")
        try:
            code = child.wait()
        finally:
            running_marker(run).unlink(missing_ok=True)
    if code != 0 or not run.result.exists():
        print(f"run failed (exit {code}): {run.log}", file=sys.stderr, flush=True)
        return None
    return {**json.loads(run.result.read_text()), **run.meta}


def run_many(runs: list[TrainRun], jobs: int = 1, env: dict | None = None, on_done=None,
             threads: int | None = None) -> list[dict]:
    """Train ``runs`` with ``jobs`` processes at a time (in the order given: put slow ones first), each with
    ``threads`` torch threads (default: the cores split between the jobs). A failing run is reported and
    left out; the others still run. ``on_done(run, result)`` is called as each finishes. Returns the
    results of the runs that finished, in the order of ``runs``. Every launcher of training runs (sweeps,
    the MQAR table, the JRT probe) goes through this function."""
    if jobs < 1:
        raise ValueError(f"jobs must be ≥ 1, got {jobs}")
    threads = threads or threads_per_job(jobs)

    def one(run: TrainRun):
        result = launch(run, threads, env)
        if on_done is not None:
            on_done(run, result)
        return result

    with ThreadPoolExecutor(jobs) as pool:
        return [r for r in pool.map(one, runs) if r is not None]


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", type=Path, required=True, help="where the result JSON goes")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    train_and_measure(argv[split + 1 :], args.json)


if __name__ == "__main__":
    main()
