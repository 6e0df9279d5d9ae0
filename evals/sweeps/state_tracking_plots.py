"""The state-tracking map's two pictures (matplotlib, Agg), from the sweep's per-run rows:

* acc_vs_length.png — accuracy against test length, one panel per task, one line per mixer: the mean
  over seeds, the band from the worst to the best seed; the last training length marked;
* mixer_task_grid.png — one cell per (mixer, task): the best seed's accuracy on the lengths longer
  than training (the number printed in the cell), blank where the map has no run.

Accuracies as ``state_tracking_claims`` defines them (parity and mod 5 scaled to chance 0).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from recall_lm.evals.sweeps.state_tracking_claims import (  # noqa: E402
    IN_DISTRIBUTION,
    MIXERS,
    TASKS,
    accuracy,
    by_cell,
    longer,
    slice_length,
    split_cell,
)


def plot_length(rows: list[dict], path: Path) -> Path:
    cells = by_cell(rows)
    tasks = [t for t in TASKS if any(split_cell(c)[0] == t for c in cells)]
    cols = min(4, max(1, len(tasks)))
    n_rows = max(1, math.ceil(len(tasks) / cols))
    fig, axes = plt.subplots(n_rows, cols, figsize=(4.2 * cols, 3.3 * n_rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        for name, runs in sorted(cells.items()):
            if split_cell(name)[0] != task:
                continue
            slices = sorted(
                {k.split("/", 2)[2] for r in runs for k in r["metrics"] if k.startswith("val/acc/")},
                key=slice_length,
            )
            xs = [slice_length(s) for s in slices]
            per_seed = [[accuracy(r, s, task) for s in slices] for r in runs]
            mean = [sum(v) / len(v) for v in zip(*per_seed)]
            (line,) = ax.plot(
                xs, mean, marker="o", label=f"{MIXERS.get(split_cell(name)[1], name)} ({len(runs)})"
            )
            if len(runs) > 1:
                ax.fill_between(
                    xs,
                    [min(v) for v in zip(*per_seed)],
                    [max(v) for v in zip(*per_seed)],
                    color=line.get_color(),
                    alpha=0.2,
                )
        trained = max(slice_length(s) for s in IN_DISTRIBUTION[task])
        ax.axvline(trained, color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log", base=2)
        ax.set_title(TASKS[task].title, fontsize=9)
        ax.set_xlabel("test length (longest in slice)")
        ax.set_ylabel("accuracy, scaled (chance 0)" if TASKS[task].scaled else "accuracy (positions)")
        ax.set_ylim(-0.1 if TASKS[task].scaled else 0, 1.02)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis("off")
    fig.suptitle("State tracking: accuracy vs test length\n(mean of seeds; band: worst to best seed; "
                 "dotted: longest training length)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_grid(rows: list[dict], path: Path) -> Path:
    cells = by_cell(rows)
    tasks = [t for t in TASKS if any(split_cell(c)[0] == t for c in cells)]
    mixers = [m for m in MIXERS if any(split_cell(c)[1] == m for c in cells)]
    values = [[math.nan] * len(tasks) for _ in mixers]
    for name, runs in cells.items():
        task, mixer = split_cell(name)
        if task in tasks and mixer in mixers:
            values[mixers.index(mixer)][tasks.index(task)] = max(longer(r) for r in runs)
    fig, ax = plt.subplots(figsize=(1.3 * len(tasks) + 3, 0.45 * len(mixers) + 1.6))
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    ax.imshow(np.ma.masked_invalid(np.array(values)), vmin=0, vmax=1, cmap=cmap, aspect="auto")
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            if not math.isnan(v):
                ax.text(
                    j,
                    i,
                    f"{v:.2f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if v < 0.6 else "black",
                )
    ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right")
    ax.set_yticks(range(len(mixers)), [MIXERS[m] for m in mixers])
    ax.set_title("Best seed, lengths longer than training\n(parity, mod 5 scaled to chance 0)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
