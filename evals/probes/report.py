"""Shared output of the probes (evals/probes/mqar_eval.py, evals/probes/passkey_eval.py,
evals/probes/recall_tasks_eval.py): CSV, markdown and heat-map PNG writers, and a checkpoint loader that
fails with the file's name."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np


def load_checkpoint_model(ckpt: str | Path, device: str = "cpu"):
    """(DecoderLM in eval mode, hparams) from a train.py checkpoint or run folder."""
    from recall_lm.models.checkpoint import load_model

    return load_model(ckpt, map_location=device)


def add_checkpoint_argument(parser) -> None:
    """``--ckpt``: what every report scores."""
    parser.add_argument("--ckpt", required=True, help="a train.py checkpoint (.ckpt), its run folder, or an "
                                                     "exported folder (recall_lm.models.export)")


def grid_matrix(
    rows: list[dict], row_key: str, col_key: str, row_values: list, col_values: list
) -> np.ndarray:
    """Rows of a report's grid -> accuracy matrix [len(row_values), len(col_values)]."""
    lookup = {(r[row_key], r[col_key]): r["accuracy"] for r in rows}
    return np.array([[lookup[(a, b)] for b in col_values] for a in row_values], dtype=float)


def run_name(ckpt: str | Path) -> str:
    """The run a checkpoint belongs to: ``runs/mqar/based/checkpoints/last.ckpt`` and ``runs/mqar/based``
    -> "based"."""
    ckpt = Path(ckpt)
    return (ckpt.parent.parent if ckpt.is_file() else ckpt).name


def write_rows(rows: list[dict], columns: list[str], stem: Path, title: str) -> tuple[Path, Path]:
    """Write ``rows`` (dicts keyed by ``columns``) to ``stem``.csv and ``stem``.md (``title`` on top)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = stem.with_suffix(".csv"), stem.with_suffix(".md")
    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in columns})

    def cell(value):
        if isinstance(value, float):
            return "—" if math.isnan(value) else f"{value:.3f}"
        return "—" if value is None or value == "" else str(value)

    lines = [title, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


def heatmap(values: np.ndarray, row_labels: list, col_labels: list, path: Path, title: str,
            xlabel: str, ylabel: str) -> Path:
    """values [rows, cols] in [0, 1] (NaN = not evaluated, drawn grey with 'n/a') -> a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = np.asarray(values, dtype=float)
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(col_labels), 1.0 + 0.6 * len(row_labels)))
    cmap = plt.get_cmap("viridis").with_extremes(bad="lightgrey")
    image = ax.imshow(
        np.ma.masked_invalid(values), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto", origin="lower"
    )
    ax.set_xticks(range(len(col_labels)), [str(c) for c in col_labels])
    ax.set_yticks(range(len(row_labels)), [str(r) for r in row_labels])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            text = "n/a" if math.isnan(v) else f"{v:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="black" if math.isnan(v) or v > 0.6 else "white")
    fig.colorbar(image, ax=ax, label="accuracy")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(rows: list[dict], columns: list[str], stem: Path, title: str, grid: tuple,
                 labels: tuple) -> list[dict]:
    """A report's outputs: ``stem``.csv / .md (``write_rows``) and a heat map ``stem``.png of its grid.
    ``grid`` = (row key, column key, row values, column values); ``labels`` = (plot title, x label, y label).
    Prints the table and the paths; returns ``rows``."""
    row_key, col_key, row_values, col_values = grid
    csv_path, md_path = write_rows(rows, columns, stem, title)
    png = heatmap(grid_matrix(rows, row_key, col_key, row_values, col_values), row_values, col_values,
                  stem.with_suffix(".png"), *labels)
    print(md_path.read_text())
    print(f"wrote {csv_path}, {md_path}, {png}")
    return rows
