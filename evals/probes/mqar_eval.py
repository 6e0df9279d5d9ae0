"""MQAR accuracy of a trained checkpoint over a (sequence length × key-value pairs) grid.

    python -m recall_lm.evals.probes.mqar_eval --ckpt runs/mqar/based --seq-lens 64 128 256 --kv 4 8 16 32
    python -m recall_lm.evals.probes.mqar_eval --ckpt runs/quickstart --seq-lens 64 128 --kv 4 8 \\
        --num-passes 2

The grid may go beyond what the model was trained on (longer sequences, more pairs): that is the
extrapolation probe. Test data come from ``recall_lm.data.mqar.multiquery_ar`` with the checkpoint's own
vocabulary; a combination the generator cannot build (2·kv·passes context + 2·kv query slots > L,
vocabulary ≤ L, …) is kept in the table as "infeasible" with the generator's reason. Accuracy is
averaged per example exactly as in training (``recall_lm.training.task.per_example_accuracy``):
the fraction of an example's queries answered right, then the mean over examples.
Writes ``<out>.csv``, ``<out>.md`` and ``<out>.png`` (a heat map); default out is
evals/results/probes/mqar_eval_<run name>.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from recall_lm.data.mqar import multiquery_ar, validate_mqar_arguments
from recall_lm.evals.common import ROOT
from recall_lm.evals.probes.report import (
    add_checkpoint_argument,
    load_checkpoint_model,
    run_name,
    write_report,
)
from recall_lm.training.task import per_example_accuracy

COLUMNS = ["seq_len", "num_kv_pairs", "num_passes", "accuracy", "num_examples", "trained_on", "status"]


def training_data(ckpt: str | Path) -> dict:
    """The run's ``data.init_args``, read from the config.yaml that train.py saved beside the checkpoint
    (``<run>/csv/config.yaml``); {} when it cannot be found."""
    import yaml

    from recall_lm.models.checkpoint import resolve_checkpoint

    run = resolve_checkpoint(ckpt).parent.parent
    path = run / "csv" / "config.yaml"
    if not path.is_file():
        return {}
    data = (yaml.safe_load(path.read_text()) or {}).get("data") or {}
    return data.get("init_args") or {}


def training_settings(ckpt: str | Path) -> set[tuple[int, int, int]] | None:
    """(seq_len, kv, passes) of the run's MQAR train slices; None when they cannot be found."""
    slices = training_data(ckpt).get("train_slices") or []
    return {(s.get("input_seq_len"), s.get("num_kv_pairs"), s.get("num_passes", 1)) for s in slices} or None


@torch.no_grad()
def mqar_accuracy(model, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int = 64) -> float:
    """Mean per-example accuracy of ``model`` on inputs/labels [N, L] (batched forward passes)."""
    device = next(model.parameters()).device
    scores = []
    for start in range(0, inputs.shape[0], batch_size):
        x = inputs[start : start + batch_size].to(device)
        y = labels[start : start + batch_size].to(device)
        scores.append(per_example_accuracy(model(x).logits, y).cpu())
    return torch.cat(scores).mean().item()


def evaluate_grid(model, seq_lens: list[int], kvs: list[int], num_examples: int = 500, batch_size: int = 64,
                  num_passes: int = 1, seed: int = 1_000_003, power_a: float = 0.01,
                  random_non_queries: bool = True, vocab_size: int | None = None) -> list[dict]:
    """One row per (seq_len, kv): accuracy (NaN and a reason in ``status`` when infeasible). MQAR draws
    keys from the lower half of ``vocab_size`` and values from the upper half, so it should be the
    vocabulary the model was trained on (default: the model's)."""
    if num_examples < 1 or batch_size < 1:
        raise ValueError(f"num_examples and batch_size must be ≥ 1, got {num_examples}, {batch_size}")
    vocab_size = vocab_size or model.config.vocab_size
    if vocab_size > model.config.vocab_size:
        raise ValueError(f"vocab_size {vocab_size} is larger than the model's {model.config.vocab_size}")
    rows = []
    for i, L in enumerate(seq_lens):
        for j, kv in enumerate(kvs):
            row = {"seq_len": L, "num_kv_pairs": kv, "num_passes": num_passes, "num_examples": num_examples}
            try:
                validate_mqar_arguments(vocab_size, L, kv, num_passes)
            except ValueError as error:
                rows.append(
                    {**row, "accuracy": float("nan"), "num_examples": 0, "status": f"infeasible: {error}"}
                )
                continue
            inputs, labels = multiquery_ar(vocab_size, num_examples, L, kv, power_a=power_a,
                                           random_non_queries=random_non_queries, num_passes=num_passes,
                                           seed=seed + 1000 * i + j)
            rows.append({**row, "accuracy": mqar_accuracy(model, inputs, labels, batch_size), "status": "ok"})
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_checkpoint_argument(parser)
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--kv", type=int, nargs="+", default=[4, 8, 16, 32])
    parser.add_argument("--num-examples", type=int, default=500, help="examples per grid cell")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-passes", type=int, default=1, help="context reads (2 = JRT)")
    parser.add_argument("--seed", type=int, default=1_000_003)
    parser.add_argument(
        "--vocab-size",
        type=int,
        default=None,
        help="MQAR vocabulary (default: the run's data.init_args.vocab_size, else the model's)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, help="output stem (default evals/results/probes/mqar_eval_<run>)")
    args = parser.parse_args(argv)
    if args.num_examples < 1 or args.batch_size < 1:
        parser.error(
            f"--num-examples and --batch-size must be ≥ 1, got {args.num_examples}, {args.batch_size}"
        )
    try:
        model, _ = load_checkpoint_model(args.ckpt, args.device)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}") from None
    vocab_size = args.vocab_size or training_data(args.ckpt).get("vocab_size") or model.config.vocab_size
    if vocab_size > model.config.vocab_size:
        parser.error(
            f"--vocab-size {vocab_size} is larger than the model's vocabulary {model.config.vocab_size}"
        )
    rows = evaluate_grid(
        model,
        args.seq_lens,
        args.kv,
        args.num_examples,
        args.batch_size,
        args.num_passes,
        args.seed,
        vocab_size=vocab_size,
    )
    trained = training_settings(args.ckpt)
    for row in rows:  # marks extrapolation: "no" = a setting the model never saw in training
        key = (row["seq_len"], row["num_kv_pairs"], row["num_passes"])
        row["trained_on"] = "unknown" if trained is None else ("yes" if key in trained else "no")
    name = run_name(args.ckpt)
    out = args.out or ROOT / "evals" / "results" / "probes" / f"mqar_eval_{name}"
    title = (f"MQAR accuracy of `{args.ckpt}` (vocabulary {vocab_size}, {args.num_examples} examples "
             f"per cell, passes {args.num_passes}); command: `python -m recall_lm.evals.probes.mqar_eval "
             f"{' '.join(sys.argv[1:] if argv is None else argv)}`")
    return write_report(rows, COLUMNS, out, title, ("seq_len", "num_kv_pairs", args.seq_lens, args.kv),
                        (f"MQAR accuracy: {name}", "key-value pairs", "sequence length"))


if __name__ == "__main__":
    main()
