"""Where the perplexity gap lies: Zoology's associative-recall-hit split of per-token loss (Arora et al.,
2023, "Zoology: Measuring and Improving Recall in Efficient Language Models", Section 3).

    python -m recall_lm.evals.probes.ar_hits --config configs/lm/compare/attention.yaml \\
        --ckpt runs/lm_compare/attention --ckpt runs/lm_compare/mamba2 [--reference attention] \\
        [--seq-len 512] [--max-windows 64] [--threshold auto] [--out-dir evals/results/ar_hits]

Definition (Zoology, Section 3): a token is an **AR hit** when it is the second token of a bigram that
already occurred earlier in the same context, and that bigram is rare in the training data (≤ 1,250
occurrences in their ~10B training tokens of the Pile, GPT-2 BPE). Every other token is "other": bigrams
not seen before in the context, and repeated bigrams that are frequent in training (memorised statistics
rather than in-context recall). The frequent repeats are also reported as their own column.

The threshold scales with the training set: ``auto`` keeps Zoology's rate of 1,250 per 10¹⁰ tokens
(at least 1), so a bigram counts as rare when it is as rare, per training token, as Zoology's were.

The contexts are consecutive windows of ``seq_len + 1`` tokens of the held-out split of the data config
(the same tokenizer and documents as training); each window is one sequence to the model, and "earlier in
the context" means earlier in the window. When the config trains document-masked (``document_mask``, the
default), the windows run as training runs them: each document of a window is its own sequence, the context
is the window's part of that document, and the token after an EOS (never scored in training) is left out.
Counted on subword tokens only: a byte tokenizer is refused
(almost every byte completes a bigram seen before).

Per model: mean loss (nats) on AR hits, frequent repeats, other tokens and all, and bits per byte (the
summed loss in bits over the UTF-8 bytes the predicted tokens decode to); against the reference
model, the gap per category and the share of the summed gap on AR hits:
``share = n_AR · Δ_AR / Σ_c n_c · Δ_c`` (Δ_c the category's mean-loss gap, n_c its token count).
Writes ``ar_hits.csv``, ``ar_hits.md`` and ``ar_hits.png`` (loss on AR hits vs other tokens per model).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ZOOLOGY_THRESHOLD = 1250  # occurrences in training of a bigram still counted as rare (Zoology, Section 3)
ZOOLOGY_TRAIN_TOKENS = 10e9  # the training tokens those counts came from (Zoology's Pile models)
OTHER, AR_HIT, FREQUENT_REPEAT, UNSCORED = 0, 1, 2, -1
CATEGORIES = {AR_HIT: "AR hits", FREQUENT_REPEAT: "frequent repeats", OTHER: "other"}


# ---------------------------------------------------------------------------------------------- counting
@dataclass
class BigramCounts:
    """Occurrences of each bigram in the training tokens: sorted keys ``a · V + b`` and their counts."""

    keys: np.ndarray
    counts: np.ndarray
    vocab_size: int
    n_tokens: int

    @classmethod
    def of(cls, ids: np.ndarray, vocab_size: int) -> "BigramCounts":
        ids = np.asarray(ids, dtype=np.int64)
        keys, counts = np.unique(ids[:-1] * vocab_size + ids[1:], return_counts=True)
        return cls(keys, counts, vocab_size, len(ids))

    def lookup(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """Training counts of the bigrams (first[i], second[i]) (0 for unseen ones)."""
        query = np.asarray(first, dtype=np.int64) * self.vocab_size + np.asarray(second, dtype=np.int64)
        if not len(self.keys):
            return np.zeros(query.shape, dtype=np.int64)
        at = np.minimum(np.searchsorted(self.keys, query), len(self.keys) - 1)
        return np.where(self.keys[at] == query, self.counts[at], 0)


def auto_threshold(train_tokens: int) -> int:
    """Zoology's 1,250 per 10¹⁰ training tokens, scaled to ``train_tokens`` (at least 1)."""
    return max(1, round(ZOOLOGY_THRESHOLD * train_tokens / ZOOLOGY_TRAIN_TOKENS))


NOT_REPEATED, NOT_SCORED = -1, -2  # repeat_counts' marks for a first occurrence and an unscored token


def repeat_counts(window: np.ndarray, counts: BigramCounts, eos: int | None = None) -> np.ndarray:
    """``[len(window) − 1]`` int64, one entry per predicted token ``window[i + 1]`` (the bigram
    (window[i], window[i + 1])): the bigram's training count when the same bigram ends at an earlier position
    of the same context, NOT_REPEATED otherwise (its first occurrence in the context).

    With ``eos`` (document-masked models, as trained): the context is the window's part of one document;
    the token after an EOS (the next document's first, which training never scores) is NOT_SCORED."""
    window = np.asarray(window, dtype=np.int64)
    if len(window) < 2:
        return np.zeros(0, dtype=np.int64)
    first_tokens = window[:-1]
    document = np.zeros(len(first_tokens), dtype=np.int64)
    if eos is not None:  # the document of bigram i: the EOS tokens before position i
        document[1:] = np.cumsum(first_tokens[:-1] == eos)
    bigram = first_tokens * counts.vocab_size + window[1:]
    keys = np.stack([document, bigram], axis=1)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    repeat = np.arange(len(bigram)) > first[inverse.reshape(-1)]
    out = np.where(repeat, counts.lookup(first_tokens, window[1:]), NOT_REPEATED)
    if eos is not None:
        out[first_tokens == eos] = NOT_SCORED
    return out


def categories(window: np.ndarray, counts: BigramCounts, threshold: int,
               eos: int | None = None) -> np.ndarray:
    """``[len(window) − 1]`` int8: the category of each predicted token: AR_HIT when its bigram repeats in
    the context (:func:`repeat_counts`) and occurs ≤ threshold times in training, FREQUENT_REPEAT when it
    repeats but is more frequent, OTHER otherwise (the first occurrence of a bigram in the context, or a
    window of one token), UNSCORED for the token after an EOS when ``eos`` is given."""
    return categories_of(repeat_counts(window, counts, eos), threshold)


def categories_of(repeats: np.ndarray, threshold: int) -> np.ndarray:
    out = np.full(repeats.shape, OTHER, dtype=np.int8)
    out[(repeats >= 0) & (repeats <= threshold)] = AR_HIT
    out[repeats > threshold] = FREQUENT_REPEAT
    out[repeats == NOT_SCORED] = UNSCORED
    return out


def by_training_count(losses: np.ndarray, repeats: np.ndarray, edges: list[int]) -> dict:
    """Mean loss and count of the repeated bigrams in each training-count bucket (edges[i−1], edges[i]]
    (the first from 0), and the last bucket above edges[-1]:
    ``{"repeats_le1_loss": …, "repeats_le1_n": …, …}``."""
    out = {}
    lows = [-1, *edges]
    for lo, hi in zip(lows, [*edges, None]):
        mask = (repeats > lo) if hi is None else (repeats > lo) & (repeats <= hi)
        key = f"repeats_gt{lo}" if hi is None else f"repeats_le{hi}"
        out[f"{key}_n"] = int(mask.sum())
        out[f"{key}_loss"] = float(losses[mask].mean()) if mask.any() else float("nan")
    return out


# ------------------------------------------------------------------------------------------------ scoring
@torch.inference_mode()
def token_losses(model, windows: torch.Tensor, batch_size: int = 8, eos: int | None = None) -> torch.Tensor:
    """windows ``[N, T + 1]`` -> per-token cross-entropy (nats) ``[N, T]`` of predicting tokens 1 … T.

    With ``eos`` the windows run as training runs document-masked blocks: each window's documents (a new
    one after every EOS) packed into one row with ``cu_seqlens``, so no token sees another document."""
    from recall_lm.layers.documents import Documents

    out = []
    for batch in windows.split(batch_size):
        inputs, targets = batch[:, :-1], batch[:, 1:]
        if eos is None:
            logits = model(inputs).logits.float()
        else:
            starts = torch.cat([torch.ones_like(inputs[:, :1], dtype=torch.bool), inputs[:, :-1] == eos], 1)
            cu_seqlens = Documents.from_starts(starts).cu_seqlens
            packed = model(inputs.reshape(1, -1), cu_seqlens=cu_seqlens).logits.float()
            logits = packed.view(*inputs.shape, -1)
        out.append(torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none"))
    return torch.cat(out)


def summarize(losses: np.ndarray, cats: np.ndarray) -> dict:
    """Mean loss and token count per category, and over all scored tokens (UNSCORED left out)."""
    scored = cats != UNSCORED
    row = {"all_loss": float(losses[scored].mean()), "all_n": int(scored.sum())}
    for code, name in CATEGORIES.items():
        mask = cats == code
        key = name.replace(" ", "_")
        row[f"{key}_n"] = int(mask.sum())
        row[f"{key}_loss"] = float(losses[mask].mean()) if mask.any() else float("nan")
    return row


def gap_share(row: dict, ref: dict) -> dict:
    """Gaps to the reference per category and the share of the summed gap that falls on AR hits (NaN
    when the summed gap is not positive)."""
    gaps = {}
    total = 0.0
    for name in CATEGORIES.values():
        key = name.replace(" ", "_")
        delta = row[f"{key}_loss"] - ref[f"{key}_loss"] if row[f"{key}_n"] else 0.0
        gaps[f"{key}_gap"] = delta
        total += row[f"{key}_n"] * delta
    gaps["all_gap"] = row["all_loss"] - ref["all_loss"]
    # a share of a gap only where there is one: a model not behind the reference has none to split
    gaps["ar_share"] = row["AR_hits_n"] * gaps["AR_hits_gap"] / total if total > 0 else float("nan")
    return gaps


# ---------------------------------------------------------------------------------------------- the command
def _data_module(config: Path, seq_len: int | None):
    """The TextDataModule of a training config's ``data`` section, set up (tokenised, cached)."""
    import yaml

    from recall_lm.data.text_datamodule import TextDataModule

    data = (yaml.safe_load(config.read_text()) or {}).get("data") or {}
    if not str(data.get("class_path", "")).endswith("TextDataModule"):
        raise SystemExit(f"error: --config {config}: its data section is not a TextDataModule")
    args = dict(data.get("init_args") or {})
    if seq_len:
        args["seq_len"] = seq_len
    dm = TextDataModule(**args)
    dm.setup()
    return dm


def _read_split(dm, split: str) -> np.ndarray:
    meta = json.loads((dm.token_dir / "meta.json").read_text())
    return np.fromfile(dm.token_dir / f"{split}.bin", dtype=meta["dtype"])


def _check_tokenizer(ckpt: str, dm) -> None:
    from recall_lm.data.tokenizers import tokenizer_for_checkpoint

    saved = tokenizer_for_checkpoint(ckpt)
    if saved is not None and saved.fingerprint != dm.tokenizer.fingerprint:
        raise SystemExit(f"error: --ckpt {ckpt} was trained with tokenizer {saved.name!r}, the data config "
                         f"uses {dm.tokenizer.name!r}: the AR-hit split needs the model's own tokens")


def run(ckpts: list[str], config: Path, reference: str | None, seq_len: int | None, max_windows: int,
        threshold: str, out_dir: Path, batch_size: int = 8) -> list[dict]:
    from recall_lm.evals.probes.report import load_checkpoint_model, run_name

    names = [run_name(c) for c in ckpts]
    if len(set(names)) != len(names):
        raise SystemExit(f"error: --ckpt: two checkpoints share a run name ({names}); give run folders")
    reference = reference or names[0]
    if reference not in names:
        raise SystemExit(f"error: --reference {reference!r} is not one of the checkpoints' runs {names}")
    if threshold != "auto" and not (threshold.isdigit() and int(threshold) >= 0):
        raise SystemExit(f"error: --threshold must be 'auto' or a count ≥ 0, got {threshold!r}")
    dm = _data_module(config, seq_len)
    if dm.tokenizer.name == "byte":
        raise SystemExit("error: --config uses the byte tokenizer: the AR-hit split is defined on subword "
                         "tokens (almost every byte completes a bigram seen before); use a BPE tokenizer")
    for ckpt in ckpts:
        _check_tokenizer(ckpt, dm)
    train = _read_split(dm, "train")
    counts = BigramCounts.of(train, dm.tokenizer.vocab_size)
    limit = auto_threshold(len(train)) if threshold == "auto" else int(threshold)
    block = dm.seq_len + 1
    val = _read_split(dm, "val")
    n = min(len(val) // block, max_windows)
    if n == 0:
        raise SystemExit(f"error: the held-out split has {len(val)} tokens, fewer than one window of {block}")
    windows = np.asarray(val[: n * block], dtype=np.int64).reshape(n, block)
    eos = dm.tokenizer.eos_token_id if dm.document_mask else None
    repeats = np.stack([repeat_counts(w, counts, eos) for w in windows])
    cats = categories_of(repeats, limit)
    edges = [limit, *[e for e in (10, 100, 1000, 10000) if e > limit]]
    scored = cats != UNSCORED
    n_bytes = sum(len(dm.tokenizer.decode(w[1:][keep].tolist()).encode("utf-8"))
                  for w, keep in zip(windows, scored))
    rows = []
    for name, ckpt in zip(names, ckpts):
        model, _ = load_checkpoint_model(ckpt)
        losses = token_losses(model, torch.from_numpy(windows), batch_size, eos).numpy()
        row = {"model": name, "parameters": sum(p.numel() for p in model.parameters()),
               "state_bytes": model.state_bytes(dm.seq_len), **summarize(losses, cats),
               "bits_per_byte": float(losses[scored].sum() / np.log(2) / n_bytes),
               **by_training_count(losses, repeats, edges)}
        rows.append(row)
    ref = next(r for r in rows if r["model"] == reference)
    for row in rows:
        row.update(gap_share(row, ref))
    settings = {"config": str(config), "reference": reference, "windows": n, "seq_len": dm.seq_len,
                "tokenizer": dm.tokenizer.name, "train_tokens": len(train), "bytes": n_bytes,
                "document_mask": eos is not None, "threshold": limit,
                "threshold_rule": threshold}
    write(rows, settings, out_dir)
    return rows


def _fmt(x: float, digits: int = 3) -> str:
    return "–" if x != x else f"{x:.{digits}f}"


def markdown(rows: list[dict], s: dict) -> str:
    n_tokens = rows[0]["all_n"]
    lines = [
        "# Where the perplexity gap lies: Zoology's AR-hit split",
        "",
        f"- data: `{s['config']}` (held-out split), {s['windows']} windows of {s['seq_len']} predicted "
        f"tokens ({n_tokens:,} scored tokens); tokenizer `{s['tokenizer']}`"
        + ("; document-masked as trained (the context: the window's part of one document)"
           if s.get("document_mask") else ""),
        f"- AR hit: the second token of a bigram seen earlier in the window and seen ≤ {s['threshold']:,} "
        f"times in the {s['train_tokens']:,} training tokens (threshold {s['threshold_rule']}: Zoology's "
        f"1,250 per 10¹⁰ training tokens scaled to this corpus when 'auto'); frequent repeat: seen earlier "
        f"in the window but more often in training; other: the rest",
        f"- tokens: AR hits {rows[0]['AR_hits_n']:,} ({rows[0]['AR_hits_n'] / n_tokens:.1%}), frequent "
        f"repeats {rows[0]['frequent_repeats_n']:,} ({rows[0]['frequent_repeats_n'] / n_tokens:.1%}), other "
        f"{rows[0]['other_n']:,} (Zoology on the Pile: 6.4 % AR hits)",
        f"- bits per byte: the summed loss (in bits) over the UTF-8 bytes those tokens decode to "
        f"({s['bytes']:,} bytes, {s['bytes'] / n_tokens:.2f} per token)",
        f"- gap: mean loss minus the reference's (`{s['reference']}`) per category; share on AR hits = "
        f"n_AR·Δ_AR / Σ_c n_c·Δ_c, for a model behind the reference (Σ_c n_c·Δ_c > 0)",
        "",
        "| model | parameters | state (bytes) at T | bits per byte | loss: all | AR hits | "
        "frequent repeats | other | gap: all | AR hits | other | share of the gap on AR hits |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['parameters']:,} | {r['state_bytes']:,} | {_fmt(r['bits_per_byte'])} | "
            f"{_fmt(r['all_loss'])} | "
            f"{_fmt(r['AR_hits_loss'])} | {_fmt(r['frequent_repeats_loss'])} | {_fmt(r['other_loss'])} | "
            f"{_fmt(r['all_gap'])} | {_fmt(r['AR_hits_gap'])} | {_fmt(r['other_gap'])} | "
            + (
                "–"
                if r["model"] == s["reference"]
                else "– (not behind)" if r["ar_share"] != r["ar_share"] else _fmt(r["ar_share"], 2)
            )
            + " |"
        )
    buckets = [k[: -len("_n")] for k in rows[0] if k.startswith("repeats_") and k.endswith("_n")]
    names = [b.replace("repeats_le", "≤ ").replace("repeats_gt", "> ") for b in buckets]
    lines += [
        "",
        "Loss on the repeated bigrams (AR hits and frequent repeats together) by the bigram's training count "
        "(tokens per bucket in the header): how in-context recall shades into memorised statistics.",
        "",
        "| model | " + " | ".join(f"{n} ({rows[0][b + '_n']:,})" for n, b in zip(names, buckets)) + " |",
        "|---|" + "---:|" * len(buckets),
    ]
    for r in rows:
        lines.append(f"| {r['model']} | " + " | ".join(_fmt(r[b + "_loss"]) for b in buckets) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(rows) + 2), 3.4))
    x = np.arange(len(rows))
    for i, (key, label) in enumerate([("AR_hits_loss", "AR hits"), ("other_loss", "other tokens")]):
        ax.bar(x + (i - 0.5) * 0.38, [r[key] for r in rows], 0.38, label=label)
    ax.set_xticks(x, [r["model"] for r in rows], rotation=20)
    ax.set_ylabel("mean loss (nats)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write(rows: list[dict], settings: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "ar_hits.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out_dir / "ar_hits.md").write_text(markdown(rows, settings))
    plot(rows, out_dir / "ar_hits.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", action="append", required=True,
                        help="a train.py checkpoint, run folder or exported folder (repeat for each model)")
    parser.add_argument("--config", type=Path, required=True,
                        help="a training config whose data section (a TextDataModule) gives the tokens")
    parser.add_argument("--reference", default=None,
                        help="the run the gaps are measured to (default: the first)")
    parser.add_argument("--seq-len", type=int, default=None, help="window length (default: the config's)")
    parser.add_argument("--max-windows", type=int, default=64)
    parser.add_argument("--threshold", default="auto",
                        help="'auto' or the training count a rare bigram may have")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out-dir", type=Path, default=Path("evals/results/ar_hits"))
    args = parser.parse_args(argv)
    if not args.config.is_file():
        raise SystemExit(f"error: --config {args.config} is not a file")
    rows = run(args.ckpt, args.config, args.reference, args.seq_len, args.max_windows, args.threshold,
               args.out_dir, args.batch_size)
    print((args.out_dir / "ar_hits.md").read_text())
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
