"""The same-budget language-model comparison's verdicts (issue 34): \
``python -m recall_lm.evals.sweeps.lm_compare_claims [--sweep lm_compare_cpu]``.

    python -m recall_lm.evals.sweeps.sweep configs/sweeps/lm_compare_cpu.yaml --jobs 2   # the models
    python -m recall_lm.evals.probes.ar_hits --config configs/lm/compare.yaml \\
        --reference attention-seed_everything=0 \\
        --max-windows 258 --out-dir evals/results/lm_compare --ckpt runs/sweeps/lm_compare_cpu/<run> ...
    python -m recall_lm.evals.sweeps.lm_compare_claims                                    # this file

Reads the sweep's committed per-run JSON (``evals/results/sweeps/<sweep>/runs/*.json``: parameters, steps,
validation loss per validation) and the AR-hit split of the same runs' checkpoints
(``evals/results/lm_compare/ar_hits.csv``, one row per run), and the recall map's MQAR accuracy at each
family's best d_model-128 cell (``evals/results/sweeps/recall_map_cpu``). Writes ``verdict.md`` (a table
per family: learning rate, parameters, decoding state, tokens, validation loss, bits per byte, loss on AR
hits and other tokens, the share of the gap to attention on AR hits; then the two verdicts) and
``loss_curves.png`` beside the AR-hit files, and prints the verdicts.

1. **Zoology's claim** (Arora et al., 2023, Section 3: 82 % of the gap between gated convolutions and
   attention falls on AR hits): per family, the share of its gap to attention that falls on AR hits,
   n_AR·Δ_AR / Σ_c n_c·Δ_c, from the seed means, with each seed pairing's share (family seed s against
   attention seed s) as the spread. The claim is judged on the gated-convolution stack (BaseConv): agree
   when the share exceeds 1/2 in the seed means and in every pairing, disagree when it is below 1/2 in all of
   them, mixed otherwise; not testable when attention's AR-hit loss is not below BaseConv's for every pair of
   seeds (attention has not yet learnt to recall at this budget) or when BaseConv is not behind attention
   overall (no gap to share; the evidence then says whether its loss on AR hits is still the higher one).
2. **Each family**: agree when every family behind attention overall has share > 1/2, disagree when every one
   has share < 1/2, mixed otherwise; a family ahead of attention overall has no gap to share and is listed
   with its gaps on AR hits and on other tokens.
3. **Does AR-hit loss follow the recall map's MQAR ordering?** Spearman's ρ between each family's mean
   AR-hit loss and its MQAR accuracy (mean over the map's test slices) at its best d_model-128 cell, over the
   families in both (BaseConv has no recall-map cell), with the exact one-sided permutation p-value; agree
   when ρ ≤ −ρ* such that p < 0.05 (lower loss where recall is higher), disagree when ρ ≥ 0, weak otherwise.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import sys
from pathlib import Path

from recall_lm.evals.common import ROOT

RESULTS = ROOT / "evals" / "results"
REFERENCE = "attention"
GATED_CONVOLUTION = "base_conv"
ZOOLOGY_SHARE = 0.82  # the share of the gap Zoology found on AR hits (abstract and Section 3)
RECALL_MAP_D_MODEL = 128
RECALL_MAP_CELL = {  # the LM family → its recall-map mixer (the same layer; BASED with feature_dim 16)
    "attention": "attention",
    "based": "based_f16",
    "rwkv7": "rwkv7",
    "mamba2": "mamba2",
    "gated_deltanet": "gated_deltanet",
    "kda": "kda",
}
CATEGORIES = ("AR_hits", "frequent_repeats", "other")


# --------------------------------------------------------------------------------------------- statistics
def ranks(values: list[float]) -> list[float]:
    """Ranks 1 … n of ``values``, ties sharing their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's ρ: Pearson's correlation of the ranks (average ranks for ties)."""
    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    norm = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return cov / norm if norm else math.nan


def p_value_negative(x: list[float], y: list[float]) -> float:
    """Exact one-sided p-value of ρ(x, y) this negative or more, over every permutation of y (n ≤ 8)."""
    observed = spearman(x, y)
    perms = list(itertools.permutations(y))
    return sum(spearman(x, list(p)) <= observed + 1e-12 for p in perms) / len(perms)


# ------------------------------------------------------------------------------------------------ reading
def read_ar_hits(path: Path) -> dict[str, dict]:
    """ar_hits.csv → run name → its row, numbers as floats."""
    with open(path, newline="") as fh:
        return {
            r["model"]: {k: (v if k == "model" else float(v)) for k, v in r.items()}
            for r in csv.DictReader(fh)
        }


def tokens_per_step(run: dict) -> int:
    from recall_lm.evals.sweeps.sweep import run_setting

    return int(run_setting(run, "data.init_args.batch_size")) * int(
        run_setting(run, "data.init_args.seq_len")
    )


def families(runs: list[dict], ar: dict[str, dict]) -> dict[str, dict]:
    """Family → its seeds' numbers: lr, parameters, state bytes, tokens, validation loss (final and by
    step), and the AR-hit row of each seed (runs without an AR-hit row are left out)."""
    from recall_lm.evals.sweeps.sweep import run_setting

    out: dict[str, dict] = {}
    for run in sorted(runs, key=lambda r: r["run"]):
        if run["run"] not in ar:
            continue
        fam = out.setdefault(run["point"]["mixer"], {"seeds": []})
        fam["seeds"].append(
            {
                "run": run["run"],
                "seed": run_setting(run, "seed_everything"),
                "lr": run_setting(run, "model.lr"),
                "tokens": run["steps"] * tokens_per_step(run),
                "val_loss": run["metrics"].get("val/loss", math.nan),
                "curve": [
                    (step * tokens_per_step(run), loss) for step, loss in run.get("val_loss_by_step", [])
                ],
                "ar": ar[run["run"]],
            }
        )
    return out


def mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else math.nan


def share(rows: list[dict], refs: list[dict], on: tuple[str, ...] = ("AR_hits",)) -> float:
    """The share of the summed gap between the category means of ``rows`` and of ``refs`` that falls on the
    categories ``on`` (AR hits; or AR hits and frequent repeats: every bigram repeated in its context); NaN
    when ``rows`` are not behind ``refs`` (the summed gap is not positive)."""
    gaps = {c: mean(r[f"{c}_loss"] for r in rows) - mean(r[f"{c}_loss"] for r in refs) for c in CATEGORIES}
    counts = {c: mean(r[f"{c}_n"] for r in rows) for c in CATEGORIES}
    part = {c: counts[c] * gaps[c] if counts[c] else 0.0 for c in CATEGORIES}
    total = sum(part.values())
    return sum(part[c] for c in on) / total if total > 0 else math.nan  # no gap, nothing to share


def summary(fams: dict[str, dict]) -> dict[str, dict]:
    """Per family: seed means and spreads, the gap to attention and its share on AR hits (seed means and
    per seed pairing)."""
    ref = [s["ar"] for s in fams[REFERENCE]["seeds"]]
    ref_by_seed = {s["seed"]: s["ar"] for s in fams[REFERENCE]["seeds"]}
    out = {}
    for name, fam in fams.items():
        rows = [s["ar"] for s in fam["seeds"]]
        row = {
            "seeds": [s["seed"] for s in fam["seeds"]],
            "lr": fam["seeds"][0]["lr"],
            "parameters": int(rows[0]["parameters"]),
            "state_bytes": int(rows[0]["state_bytes"]),
            "tokens": fam["seeds"][0]["tokens"],
            "val_loss": [s["val_loss"] for s in fam["seeds"]],
            "bits_per_byte": [r["bits_per_byte"] for r in rows],
            "all_loss": [r["all_loss"] for r in rows],
            "AR_hits_loss": [r["AR_hits_loss"] for r in rows],
            "other_loss": [r["other_loss"] for r in rows],
        }
        if name != REFERENCE:
            row["gap"] = mean(row["all_loss"]) - mean(r["all_loss"] for r in ref)
            row["AR_gap"] = mean(row["AR_hits_loss"]) - mean(r["AR_hits_loss"] for r in ref)
            row["other_gap"] = mean(row["other_loss"]) - mean(r["other_loss"] for r in ref)
            row["share"] = share(rows, ref)
            row["share_repeats"] = share(rows, ref, on=("AR_hits", "frequent_repeats"))
            row["share_by_seed"] = [
                share([s["ar"]], [ref_by_seed[s["seed"]]]) for s in fam["seeds"] if s["seed"] in ref_by_seed
            ]
        out[name] = row
    return out


def by_budget(s: dict[str, dict], earlier: dict[str, dict]) -> dict[str, list[tuple[int, float, int]]]:
    """Family → [(tokens, mean AR-hit loss, seeds)] at each budget: ``earlier`` (the families of a shorter
    sweep, e.g. the lr sweep, from ``families``) at the final run's learning rate, then the final runs.
    Each point is its own run with its own schedule: a loss per budget, not one run's trajectory."""
    out = {}
    for name, r in s.items():
        points = []
        for seed in (earlier.get(name) or {}).get("seeds", []):
            if seed["lr"] == r["lr"]:
                points.append((seed["tokens"], seed["ar"]["AR_hits_loss"], 1))
        points.append((r["tokens"], mean(r["AR_hits_loss"]), len(r["seeds"])))
        out[name] = sorted(points)
    return out


def attention_lead(budget: dict[str, list[tuple[int, float, int]]]) -> list[tuple[int, float, str]]:
    """At each of attention's budgets: attention's AR-hit loss minus the lowest other family's at the same
    tokens, and that family (negative: attention recalls rare bigrams best)."""
    out = []
    for tokens, loss, _ in budget.get(REFERENCE, []):
        others = [
            (other, f) for f, pts in budget.items() if f != REFERENCE for t, other, _ in pts if t == tokens
        ]
        if others:
            best, fam = min(others)
            out.append((tokens, loss - best, fam))
    return out


# ------------------------------------------------------------------------------------------------ verdicts
def _fmt(x: float, digits: int = 3) -> str:
    return "–" if x is None or x != x else f"{x:.{digits}f}"


def _spread(xs: list[float], digits: int = 3) -> str:
    """mean (min–max) of a seed list."""
    if len(xs) == 1:
        return _fmt(xs[0], digits)
    return f"{_fmt(mean(xs), digits)} ({_fmt(min(xs), digits)}–{_fmt(max(xs), digits)})"


def zoology_verdict(s: dict[str, dict]) -> tuple[str, str]:
    if GATED_CONVOLUTION not in s or REFERENCE not in s:
        return "pending", f"needs the AR-hit rows of {REFERENCE} and {GATED_CONVOLUTION}"
    conv, att = s[GATED_CONVOLUTION], s[REFERENCE]
    shares = [conv["share"], *conv["share_by_seed"]]
    numbers = (
        f"BaseConv's gap to attention {_fmt(conv['gap'])} nats/token, on AR hits "
        f"{_fmt(conv['AR_gap'])}, on other tokens {_fmt(conv['other_gap'])}; share of the gap on AR hits "
        f"{_fmt(conv['share'], 2)} (seed pairings: {', '.join(_fmt(x, 2) for x in conv['share_by_seed'])}); "
        f"Zoology: {ZOOLOGY_SHARE:.2f}"
    )
    reasons = []
    if not max(att["AR_hits_loss"]) < min(conv["AR_hits_loss"]):
        reasons.append(
            f"attention's AR-hit loss ({_spread(att['AR_hits_loss'])}) is not below BaseConv's "
            f"({_spread(conv['AR_hits_loss'])}) for every pair of seeds"
        )
    if not conv["gap"] > 0:
        # a share of a gap that is not there: Zoology's claim presumes attention ahead overall
        reasons.append(
            f"BaseConv is not behind attention overall (gap {_fmt(conv['gap'])}), so no gap is there to share"
            + (
                "; what it loses is on AR hits and it gains on other tokens, the direction Zoology found"
                if conv["AR_gap"] > 0 > conv["other_gap"]
                else ""
            )
        )
    if reasons:
        return "not testable at this scale", "; ".join(reasons) + f"; {numbers}"
    if all(x > 0.5 for x in shares):
        return "agree", numbers
    if all(x < 0.5 for x in shares):
        return "disagree", numbers
    return "mixed", numbers


def each_family_verdict(s: dict[str, dict]) -> tuple[str, str]:
    """Does most of each family's gap to attention fall on AR hits? Judged on the families behind attention
    overall (seed means): agree when every one has share > ½, disagree when every one has share < ½;
    families ahead of attention have no gap to share and are listed with their AR-hit gap."""
    others = {f: r for f, r in s.items() if f != REFERENCE}
    if not others:
        return "pending", f"needs families besides {REFERENCE}"
    behind = {f: r for f, r in others.items() if r["gap"] > 0}
    ahead = {f: r for f, r in others.items() if not r["gap"] > 0}
    parts = [f"{f}: gap {_fmt(r['gap'])}, share on AR hits {_fmt(r['share'], 2)}" for f, r in behind.items()]
    if ahead:
        parts.append(
            "ahead of attention overall (no gap to share; gap on AR hits, other tokens): "
            + ", ".join(f"{f} ({_fmt(r['AR_gap'])}, {_fmt(r['other_gap'])})" for f, r in ahead.items())
        )
    detail = "; ".join(parts)
    if not behind:
        return "not testable at this scale", "no family is behind attention overall; " + detail
    if all(r["share"] > 0.5 for r in behind.values()):
        return "agree", detail
    if all(r["share"] < 0.5 for r in behind.values()):
        return "disagree", detail
    return "mixed", detail


def ordering_verdict(s: dict[str, dict], recall: dict[str, float]) -> tuple[str, str]:
    names = [f for f in s if f in recall]
    if len(names) < 4:
        return "pending", f"needs ≥ 4 families with both numbers, have {names}"
    ar = [mean(s[f]["AR_hits_loss"]) for f in names]
    mqar = [recall[f] for f in names]
    rho, p = spearman(ar, mqar), p_value_negative(ar, mqar)
    pairs = "; ".join(
        f"{f} {_fmt(a)} / {_fmt(m)}" for f, a, m in sorted(zip(names, ar, mqar), key=lambda t: t[1])
    )
    detail = (
        f"Spearman ρ(AR-hit loss, MQAR accuracy) = {rho:.2f} over {len(names)} families, one-sided exact "
        f"p = {p:.3f} (AR-hit loss / recall-map mean MQAR accuracy at d_model {RECALL_MAP_D_MODEL}: {pairs})"
    )
    if p < 0.05:
        return "agree", detail
    return ("disagree" if rho >= 0 else "weak (the sign agrees, p ≥ 0.05)"), detail


def recall_map_accuracy(sweep: str = "recall_map_cpu") -> dict[str, float]:
    """LM family → mean MQAR accuracy of its recall-map mixer's best d_model-128 cell."""
    from recall_lm.evals.sweeps.recall_claims import acc, cells, load_rows

    best = cells(load_rows(sweep))
    return {
        fam: acc(best[(mixer, RECALL_MAP_D_MODEL)])
        for fam, mixer in RECALL_MAP_CELL.items()
        if (mixer, RECALL_MAP_D_MODEL) in best
    }


# ------------------------------------------------------------------------------------------- the final sweep
FINAL_STEPS = 1000  # the final runs' budget: 4.1 M tokens each, the most that 2 cores give 14 runs in ~2 h
FINAL_SEEDS = (0, 1)
FINAL_VAL_EVERY = 125


def final_sweep(lr_sweep_path: Path, lr_rows: list[dict]) -> tuple[dict, list[str]]:
    """The final sweep's spec: each family of the learning-rate sweep with its best rate by final validation
    loss (the lr sweep's own ``select``), FINAL_SEEDS seeds, FINAL_STEPS steps, checkpoints kept for the
    AR-hit split. Families whose lr runs have not all finished are left out (rewrite the file when they
    have). Returns the spec and the families left out."""
    import yaml

    from recall_lm.evals.sweeps.sweep import best_lr, load_sweep

    source = load_sweep(lr_sweep_path)
    spec = yaml.safe_load(lr_sweep_path.read_text())
    lrs = source.grid[source.lr_key]
    done = {f: [r for r in lr_rows if r["point"]["mixer"] == f] for f in source.grid["mixer"]}
    ready = [f for f in source.grid["mixer"] if len(done[f]) == len(lrs)]
    best = {r["point"]["mixer"]: r["point"][source.lr_key]
            for r in best_lr([r for f in ready for r in done[f]], source.lr_key, source.select)}
    base = {}
    for family in ready:
        entry = spec["base"][family]
        if isinstance(entry, str):
            entry = {"config": entry, "set": {}}
        entry = {**entry, "set": dict(entry.get("set") or {})}
        entry["set"][source.lr_key] = best[family]
        base[family] = entry
    fixed = {**source.fixed, "trainer.max_steps": FINAL_STEPS, "trainer.val_check_interval": FINAL_VAL_EVERY,
             "trainer.enable_checkpointing": True}
    return {
        "name": source.name.removesuffix("_lr"),
        "description": f"{source.name}'s families at their best lr, {FINAL_STEPS} steps, seeds "
                       f"{', '.join(map(str, FINAL_SEEDS))}",
        "base": base,
        "fixed": fixed,
        "grid": {"mixer": ready, "seed_everything": list(FINAL_SEEDS)},
        "select": source.select,
    }, [f for f in source.grid["mixer"] if f not in ready]


# ------------------------------------------------------------------------------------------------ writing
def plot_curves(
    fams: dict[str, dict], path: Path, budget: dict[str, list[tuple[int, float, int]]] | None = None
) -> Path:
    """Validation loss against training tokens per family (seed mean, min–max band); with ``budget``, a
    second panel: loss on AR hits against tokens."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 if budget else 1, figsize=(11.0 if budget else 6.4, 4.0), squeeze=False)
    ax = axes[0][0]
    colours = {}
    for name, fam in fams.items():
        curves = [s["curve"] for s in fam["seeds"] if s["curve"]]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        x = [curves[0][i][0] / 1e6 for i in range(n)]
        ys = [[c[i][1] for c in curves] for i in range(n)]
        (line,) = ax.plot(x, [mean(y) for y in ys], label=name, marker="." if n < 8 else None)
        ax.fill_between(x, [min(y) for y in ys], [max(y) for y in ys], color=line.get_color(), alpha=0.2)
        colours[name] = line.get_color()
    ax.set_xlabel("training tokens (millions)")
    ax.set_ylabel("validation loss (nats/token)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    if budget:
        ax = axes[0][1]
        for name, pts in budget.items():
            ax.plot([t / 1e6 for t, _, _ in pts], [loss for _, loss, _ in pts], marker="o", label=name,
                    color=colours.get(name))
        ax.set_xlabel("training tokens (millions; one run per budget)")
        ax.set_ylabel("loss on AR hits (nats/token)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def markdown(
    s: dict[str, dict],
    verdicts: list[tuple[str, str, str]],
    sweep: str,
    budget: dict[str, list[tuple[int, float, int]]] | None = None,
) -> str:
    lines = [
        "# Text LMs at the same budget: where the gap to attention lies",
        "",
        f"Written by `python -m recall_lm.evals.sweeps.lm_compare_claims --sweep {sweep}` from the sweep's "
        "committed runs and the AR-hit split of their checkpoints (`ar_hits.md` beside this file). "
        "Numbers are seed means with (min–max) over the seeds; losses in nats per token on the held-out "
        "split.",
        "",
        "| family | lr | parameters | decoding state (bytes, T = 256) | tokens | seeds | val loss | "
        "bits per byte "
        "| loss on AR hits | other tokens | gap to attention | on AR hits | share of the gap on AR hits "
        "| on all repeated bigrams |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in s.items():
        ref = name == REFERENCE
        lines.append(
            f"| {name} | {r['lr']:g} | {r['parameters']:,} | {r['state_bytes']:,} | {r['tokens']:,} | "
            f"{len(r['seeds'])} | {_spread(r['val_loss'])} | {_spread(r['bits_per_byte'])} | "
            f"{_spread(r['AR_hits_loss'])} | {_spread(r['other_loss'])} | "
            + (
                "– | – | – | – |"
                if ref
                else f"{_fmt(r['gap'])} | {_fmt(r['AR_gap'])} | "
                + (
                    f"{_fmt(r['share'], 2)} ({', '.join(_fmt(x, 2) for x in r['share_by_seed'])}) | "
                    f"{_fmt(r['share_repeats'], 2)} |"
                    if r["gap"] > 0
                    else "– (ahead: no gap) | – |"
                )
            )
        )
    if budget and any(len(p) > 1 for p in budget.values()):
        sizes = sorted({t for pts in budget.values() for t, _, _ in pts})
        lines += [
            "",
            "Loss on AR hits by training tokens: each budget is its own run with its own learning-rate "
            "schedule (the shorter one is the lr sweep's run at the family's chosen rate); seed mean "
            "(seeds):",
            "",
            "| family | " + " | ".join(f"{t / 1e6:.1f} M tokens" for t in sizes) + " |",
            "|---|" + "---:|" * len(sizes),
        ]
        for name, pts in budget.items():
            at = {t: (loss, n) for t, loss, n in pts}
            lines.append(
                f"| {name} | "
                + " | ".join(f"{_fmt(at[t][0])} ({at[t][1]})" if t in at else "–" for t in sizes)
                + " |"
            )
        lead = attention_lead(budget)
        if lead:
            lines += [
                "",
                "Attention's AR-hit loss minus the lowest other family's: "
                + "; ".join(f"{_fmt(d)} at {t / 1e6:.1f} M tokens ({f})" for t, d, f in lead)
                + " (below zero once attention recalls rare bigrams best).",
            ]
    lines += ["", "| claim | verdict | evidence |", "|---|---|---|"]
    lines += [f"| {claim} | {verdict} | {evidence} |" for claim, verdict, evidence in verdicts]
    return "\n".join(lines) + "\n"


def sweep_folder(sweep: str) -> Path:
    """A sweep's results folder: the path itself, or its name under evals/results/sweeps/."""
    return Path(sweep) if Path(sweep).is_dir() else RESULTS / "sweeps" / sweep


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sweep",
        default="lm_compare_cpu",
        help="a sweep's name under evals/results/sweeps/, or its results folder",
    )
    parser.add_argument("--ar-hits", type=Path, default=RESULTS / "lm_compare" / "ar_hits.csv")
    parser.add_argument("--recall-map", default="recall_map_cpu")
    parser.add_argument(
        "--earlier",
        nargs=2,
        metavar=("SWEEP", "AR_HITS_CSV"),
        default=None,
        help="a shorter sweep of the same families and the AR-hit split of its checkpoints, for AR-hit loss "
        "by training tokens (default: lm_compare_cpu_lr and lr_sweep/ar_hits.csv beside --ar-hits, when "
        "that file exists)",
    )
    parser.add_argument("--write-final-sweep", type=Path, default=None, metavar="YAML",
                        help="write the final sweep (each family at its best lr of --lr-sweep) and stop")
    parser.add_argument("--lr-sweep", type=Path,
                        default=ROOT / "configs" / "sweeps" / "lm_compare_cpu_lr.yaml")
    args = parser.parse_args(argv)
    from recall_lm.evals.sweeps.sweep import read_run

    if args.write_final_sweep:
        import yaml

        folder = RESULTS / "sweeps" / args.lr_sweep.stem / "runs"
        lr_rows = [read_run(p) for p in sorted(folder.glob("*.json"))]
        if not lr_rows:
            raise SystemExit(
                f"error: --lr-sweep {args.lr_sweep}: no finished runs in {folder}; run it first "
                f"(python -m recall_lm.evals.sweeps.sweep {args.lr_sweep} --jobs 2)"
            )
        spec, waiting = final_sweep(args.lr_sweep, lr_rows)
        if not spec["base"]:
            raise SystemExit(
                f"error: --lr-sweep {args.lr_sweep}: no family has finished all its learning rates yet "
                f"(waiting for {', '.join(waiting)})"
            )
        header = (f"# Written by python -m recall_lm.evals.sweeps.lm_compare_claims --write-final-sweep from "
                  f"{len(lr_rows)} finished runs of {args.lr_sweep.stem}.\n"
                  f"# Run: python -m recall_lm.evals.sweeps.sweep {args.write_final_sweep} --jobs 2\n")
        if waiting:
            header += (f"# Not yet here (lr runs unfinished): {', '.join(waiting)}; rewrite this file when "
                       "they finish.\n")
        args.write_final_sweep.write_text(header + yaml.safe_dump(spec, sort_keys=False, width=110))
        print(f"wrote {args.write_final_sweep} ({len(spec['base'])} families; "
              f"waiting for {waiting or 'none'})")
        return 0

    if not args.ar_hits.is_file():
        raise SystemExit(
            f"error: --ar-hits {args.ar_hits} is not a file: run recall_lm.evals.probes.ar_hits on "
            f"the sweep's checkpoints first (see this command's --help)"
        )
    folder = sweep_folder(args.sweep)
    runs = [read_run(p) for p in sorted((folder / "runs").glob("*.json"))]
    if not runs:
        raise SystemExit(
            f"error: --sweep {args.sweep}: no runs in {folder / 'runs'}; collect the sweep first "
            f"(python -m recall_lm.evals.sweeps.sweep configs/sweeps/{folder.name}.yaml --collect)"
        )
    fams = families(runs, read_ar_hits(args.ar_hits))
    if REFERENCE not in fams:
        raise SystemExit(
            f"error: {args.ar_hits} has no row for a run of the {REFERENCE} family of {args.sweep}"
        )
    s = summary(fams)
    earlier_sweep, earlier_csv = args.earlier or (
        "lm_compare_cpu_lr",
        args.ar_hits.parent / "lr_sweep" / "ar_hits.csv",
    )
    earlier_csv = Path(earlier_csv)
    if args.earlier and not earlier_csv.is_file():
        raise SystemExit(f"error: --earlier {earlier_sweep} {earlier_csv}: {earlier_csv} is not a file")
    budget = None
    if earlier_csv.is_file():
        earlier_runs = [read_run(p) for p in sorted((sweep_folder(earlier_sweep) / "runs").glob("*.json"))]
        budget = by_budget(s, families(earlier_runs, read_ar_hits(earlier_csv)))
    verdicts = [
        (
            "Most of the gated-convolution stack's gap to attention falls on AR hits "
            "(Zoology, Arora et al. 2023, "
            "Section 3)",
            *zoology_verdict(s),
        ),
        (
            "Most of each family's gap to attention falls on AR hits",
            *each_family_verdict(s),
        ),
        (
            "The families' order on AR-hit loss follows their MQAR order in the recall map",
            *ordering_verdict(s, recall_map_accuracy(args.recall_map)),
        ),
    ]
    out = args.ar_hits.parent
    text = markdown(s, verdicts, args.sweep, budget)
    (out / "verdict.md").write_text(text)
    plot_curves(fams, out / "loss_curves.png", budget)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
