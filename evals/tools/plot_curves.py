"""Loss curves of a run as a PNG: \
``python -m recall_lm.evals.tools.plot_curves runs/lm/tiny --out curve.png``.

Reads the run's ``csv/metrics.csv`` (written by train.py for every run) and draws every requested
metric against the optimiser step, training metrics as lines and validation metrics as markers.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path


def read_metric_series(metrics_csv: Path, names: list[str]) -> dict[str, list[tuple[int, float]]]:
    """{metric: [(step, value), ...]} for each of ``names`` found in a Lightning metrics.csv."""
    if not metrics_csv.is_file():
        raise FileNotFoundError(f"no metrics file at {metrics_csv} (is it a train.py run folder?)")
    with metrics_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    missing = [n for n in names if not rows or n not in rows[0]]
    if missing:
        found = sorted(rows[0]) if rows else []
        raise ValueError(f"{metrics_csv} has no column(s) {missing}; it has {found}")
    return {n: [(int(r["step"]), float(r[n])) for r in rows if r.get(n)] for n in names}


def plot_curves(run_dir: str | Path, out: str | Path, metrics=("train/loss", "val/loss"), title=None) -> Path:
    """Draw ``metrics`` of the run in ``run_dir`` into the PNG ``out``; returns its path."""
    from matplotlib.figure import Figure

    series = read_metric_series(Path(run_dir) / "csv" / "metrics.csv", list(metrics))
    fig = Figure(figsize=(6, 3.6), dpi=120)
    ax = fig.add_subplot()
    for name, points in series.items():
        steps, values = zip(*points) if points else ((), ())
        style = {"marker": "o"} if name.startswith("val") else {}
        ax.plot(steps, values, label=name, **style)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)" if all("loss" in m for m in metrics) else "value")
    ax.set_title(title or str(run_dir))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a train.py run folder (holds csv/metrics.csv)")
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--metrics", nargs="+", default=["train/loss", "val/loss"])
    parser.add_argument("--title")
    args = parser.parse_args(argv)
    try:
        print(plot_curves(args.run_dir, args.out, args.metrics, args.title))
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main()
