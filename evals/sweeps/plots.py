"""The sweep's two pictures (matplotlib, Agg), from the best-learning-rate run of each model:

* acc_vs_dmodel.png — MQAR accuracy vs d_model, one line per mixer, one panel per test slice
  (sequence length, key-value pairs), as in Zoology's figures;
* acc_vs_state.png — accuracy vs the decoding state per sequence at the slice's length (log x), one
  line per mixer through its d_model values: the recall / state-size frontier of the BASED paper.

Rows are sweep results (evals/sweeps/sweep.py): ``metrics["val/acc/L64_kv4"]``, ``state_sizes["64"]``,
``d_model`` and ``point`` (the grid values, ``mixer`` among them).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib
from cycler import cycler

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

D_MODEL_KEYS = ("model.architecture.d_model",)


def slice_title(name: str) -> str:
    """``L256_kv32_x2`` → "seq len 256, 32 kv pairs, read 2×"; another probe's slice keeps its name."""
    from recall_lm.evals.sweeps.sweep import mqar_slice

    if mqar_slice(name) is None:
        return name
    length, kv, passes = mqar_slice(name)
    return f"seq len {length}, {kv} kv pairs" + (f", read {passes}×" if passes > 1 else "")


def slice_length(row: dict, name: str) -> str | None:
    """The sequence length of a run's test slice, as a key of its ``state_sizes``: recorded by the run
    (``slice_lengths``), else read from an MQAR slice name (runs before that record)."""
    from recall_lm.evals.sweeps.sweep import mqar_slice

    if name in row.get("slice_lengths", {}):
        return str(row["slice_lengths"][name])
    mqar = mqar_slice(name)
    return None if mqar is None else str(mqar[0])


def line_label(row: dict, lr_key: str) -> str:
    """The mixer, plus any grid value other than d_model and the learning rate (e.g. n_layers=4)."""
    point = row.get("point", {})
    label = str(point.get("mixer", row["mixer"]))
    rest = [f"{k.rsplit('.', 1)[-1]}={v if not isinstance(v, (list, dict)) else json.dumps(v)}"
            for k, v in point.items() if k not in ("mixer", lr_key, *D_MODEL_KEYS)]
    return " ".join([label, *rest])


def _slices(rows: list[dict]) -> list[str]:
    from recall_lm.evals.sweeps.sweep import slices_of

    return slices_of(rows)


def _grid(n: int):
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    # up to 20 distinguishable lines: tab20's colours, each with its own marker, in one fixed order
    styles = cycler(color=plt.cm.tab20.colors) + cycler(marker=list("osD^vP*Xhp<>dH8s^oDv"))
    for ax in axes.flat:
        ax.set_prop_cycle(styles)
    return fig, list(axes.flat)


def _lines(rows: list[dict], lr_key: str) -> dict[str, list[dict]]:
    lines: dict[str, list[dict]] = {}
    for row in rows:
        lines.setdefault(line_label(row, lr_key), []).append(row)
    return lines


def _finish(fig, axes, path: Path, title: str) -> Path:
    handles, labels = axes[0].get_legend_handles_labels()
    if labels:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 7), frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_acc_vs_dmodel(rows: list[dict], path: Path, lr_key: str = "model.lr", title: str = "") -> Path:
    """One panel per test slice: accuracy (y) vs d_model (x, log 2), a line per mixer."""
    slices = _slices(rows)
    if not slices:
        raise ValueError("no per-slice accuracies (val/acc/<slice>) in the rows to plot")
    fig, axes = _grid(len(slices))
    lines = _lines(rows, lr_key)
    for ax, name in zip(axes, slices):
        for label, group in lines.items():
            group = sorted(group, key=lambda r: r["d_model"])
            ax.plot(
                [r["d_model"] for r in group],
                [r["metrics"].get(f"val/acc/{name}", math.nan) for r in group],
                label=label,
            )
        ax.set_title(slice_title(name))
        ax.set_xscale("log", base=2)
        dms = sorted({r["d_model"] for r in rows})
        ax.set_xticks(dms, [str(d) for d in dms])
        ax.minorticks_off()
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("d_model")
        ax.set_ylabel("MQAR accuracy")
        ax.grid(alpha=0.3)
    return _finish(fig, axes, path, title or "MQAR accuracy vs model width (best lr per point)")


def plot_acc_vs_state(rows: list[dict], path: Path, lr_key: str = "model.lr", title: str = "") -> Path:
    """One panel per test slice: accuracy (y) vs decoding state per sequence at the slice's length
    (x, log), a line per mixer through its d_model values."""
    slices = _slices(rows)
    if not slices:
        raise ValueError("no per-slice accuracies (val/acc/<slice>) in the rows to plot")
    fig, axes = _grid(len(slices))
    lines = _lines(rows, lr_key)
    for ax, name in zip(axes, slices):
        for label, group in lines.items():
            pts = sorted((r["state_sizes"][length], r["metrics"].get(f"val/acc/{name}", math.nan))
                         for r in group if (length := slice_length(r, name)) in r.get("state_sizes", {}))
            if pts:
                ax.plot(*zip(*pts), label=label)
        ax.set_title(slice_title(name))
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))  # 1k, 2k, 5k, 10k, ...
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel(f"state per sequence at length {length} (numbers)")
        ax.set_ylabel("MQAR accuracy")
        ax.grid(alpha=0.3, which="both")
    return _finish(fig, axes, path, title or "MQAR accuracy vs decoding state size (best lr per point)")


def plot_acc_vs_time(rows: list[dict], path: Path, lr_key: str = "model.lr", title: str = "") -> Path:
    """One panel per test slice: accuracy (y) vs the run's training wall time (x, log: the whole
    ``train.py fit``, validation included), a line per mixer through its d_model values."""
    slices = _slices(rows)
    if not slices:
        raise ValueError("no per-slice accuracies (val/acc/<slice>) in the rows to plot")
    fig, axes = _grid(len(slices))
    for ax, name in zip(axes, slices):
        for label, group in _lines(rows, lr_key).items():
            pts = sorted((r["seconds"], r["metrics"].get(f"val/acc/{name}", math.nan)) for r in group)
            ax.plot(*zip(*pts), label=label)
        ax.set_title(slice_title(name))
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("training wall time (s)")
        ax.set_ylabel("MQAR accuracy")
        ax.grid(alpha=0.3, which="both")
    return _finish(fig, axes, path, title or "MQAR accuracy vs training wall time (best lr per point)")


def plot_all(rows: list[dict], sweep, out_dir: Path) -> dict[str, Path]:
    """The three plots of a sweep's best-lr runs into ``out_dir``."""
    from recall_lm.evals.sweeps.sweep import best_lr

    best = best_lr(rows, sweep.lr_key, sweep.select)
    return {
        "acc_vs_dmodel.png": plot_acc_vs_dmodel(
            best,
            out_dir / "acc_vs_dmodel.png",
            sweep.lr_key,
            f"{sweep.name}: MQAR accuracy vs d_model (best lr each)",
        ),
        "acc_vs_state.png": plot_acc_vs_state(
            best,
            out_dir / "acc_vs_state.png",
            sweep.lr_key,
            f"{sweep.name}: MQAR accuracy vs decoding state (best lr each)",
        ),
        "acc_vs_time.png": plot_acc_vs_time(
            best,
            out_dir / "acc_vs_time.png",
            sweep.lr_key,
            f"{sweep.name}: MQAR accuracy vs training wall time (best lr each)",
        ),
    }
