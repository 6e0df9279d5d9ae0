"""The recall map's verdicts on the papers' claims: \
``python -m recall_lm.evals.sweeps.recall_claims [--sweep recall_map_cpu]``.

    python -m recall_lm.evals.sweeps.recall_claims --write-seeds-sweep \\
        configs/sweeps/recall_map_cpu_seeds.yaml
    python -m recall_lm.evals.sweeps.sweep configs/sweeps/recall_map_cpu_seeds.yaml --jobs 2 --collect
    # now with the seed spread at each mixer's best cell
    python -m recall_lm.evals.sweeps.recall_claims
    # MoM at a wider d_model, if its map cells did not learn: the MoM claim is then judged there
    python -m recall_lm.evals.sweeps.sweep configs/sweeps/recall_map_cpu_mom.yaml --jobs 2

Reads the per-run JSON that ``python -m recall_lm.evals.sweeps.sweep configs/sweeps/<sweep>.yaml --collect``
commits (``evals/results/sweeps/<sweep>/runs/*.json``), keeps the best learning rate per (mixer, d_model) as
the sweep does, and writes ``docs/recall_map.md``: the best-lr table (parameters, state numbers and
bytes at the longest test length, accuracy per slice, wall time) and, for each claim, agree /
disagree / not testable at this scale / pending (runs missing), with the numbers behind it. Each rule
is stated beside its verdict; nothing is claimed without the runs it names.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

import yaml

from recall_lm.evals.common import ROOT
from recall_lm.evals.sweeps.sweep import best_lr, expand, load_sweep, read_run, run_setting, slice_order

RESULTS = ROOT / "evals" / "results" / "sweeps"
HARDEST = "L256_kv64"


def load_rows(sweep: str) -> list[dict]:
    folder = RESULTS / sweep / "runs"
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder}: no per-run results; run python -m recall_lm.evals.sweeps.sweep "
            f"configs/sweeps/{sweep}.yaml "
            "--collect first"
        )
    return [read_run(p) for p in sorted(folder.glob("*.json"))]


def load_rows_or_exit(sweep: str) -> list[dict]:
    """:func:`load_rows`, or one line on stderr and exit status 2 when the sweep has no committed runs."""
    try:
        return load_rows(sweep)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def acc(row: dict, slice_name: str | None = None) -> float:
    value = row["metrics"].get("val/acc" if slice_name is None else f"val/acc/{slice_name}")
    return math.nan if value is None else float(value)


def cells(rows: list[dict]) -> dict[tuple[str, int], dict]:
    """Best-lr row per (sweep mixer name, d_model)."""
    return {(r["point"]["mixer"], r["point"]["model.architecture.d_model"]): r for r in best_lr(rows)}


def _fmt(x: float) -> str:
    return "nan" if math.isnan(x) else f"{x:.3f}"


LEARNT = 0.5  # a cell learnt MQAR when its easiest slice (L64 kv4) reaches this; the others say nothing


def learnt(row: dict) -> bool:
    """SWA's accuracy is bounded by its window by construction, so it never counts as a failure to learn."""
    return str(row["point"].get("mixer", "")).startswith("swa") or acc(row, "L64_kv4") >= LEARNT


def claims(best: dict[tuple[str, int], dict], seed_rows: list[dict] | None = None,
           mom_rows: list[dict] | None = None,
           lr_rows: list[dict] | None = None,
           long_rows: list[dict] | None = None) -> list[tuple[str, str, str]]:
    """(claim, verdict, evidence) for each claim the recall map can speak to. Cells that did not learn
    MQAR within the budget (L64 kv4 < LEARNT) are left out of every verdict and listed on their own.
    ``seed_rows`` (reruns of the best cells with other seeds) only add evidence; verdicts use seed 0.
    ``mom_rows`` (the ``<sweep>_mom`` probe: variants top2 / one_x5 at a wider d_model) decide the MoM
    claim when the map's own MoM cells did not learn. ``long_rows`` (the ``<sweep>_long`` reruns with a
    longer budget) stand in for a d_model-64 cell of the gated-recurrence claim that learnt only there."""
    out = []
    failed = sorted(k for k, r in best.items() if not learnt(r))
    if failed:
        out.append(("(cells that did not learn MQAR within the training budget; left out below)", "—",
                    f"L64 kv4 accuracy < {LEARNT}: " + ", ".join(
                        f"{m} d{d} ({_fmt(acc(best[(m, d)], 'L64_kv4'))})" for m, d in failed)))
    ran, every = set(best), dict(best)
    best = {k: r for k, r in best.items() if learnt(r)}
    d_models = sorted({d for _, d in best})

    def have(*keys):
        return all(k in best for k in keys)

    # 1. attention ≈ 1 everywhere
    att = [best[("attention", d)] for d in d_models if ("attention", d) in best]
    if att:
        worst = min(
            min(acc(r, s.split("/", 2)[2]) for s in r["metrics"] if s.startswith("val/acc/")) for r in att
        )
        out.append(("Attention recalls ≈ perfectly at every width and slice (Zoology, Fig. 2)",
                    "agree" if worst >= 0.99 else "disagree",
                    f"rule: min accuracy over slices and d_model ≥ 0.99; measured min {_fmt(worst)} "
                    f"(d_model {', '.join(str(r['d_model']) for r in att)})"))
    else:
        out.append(("Attention recalls ≈ perfectly at every width and slice (Zoology, Fig. 2)", "pending",
                    "no attention runs yet"))
    # 2. gated recurrences collapse with more pairs at small width
    pairs = [(m, best[(m, 64)]) for m in ("rwkv6", "retnet", "mamba2") if (m, 64) in best]
    longer = {r["point"]["mixer"]: r for r in long_rows or []
              if r["point"].get("model.architecture.d_model") == 64 and learnt(r)}
    pairs += [(f"{m} ({longer[m]['steps']:,} steps)", longer[m]) for m in ("rwkv6", "retnet", "mamba2")
              if (m, 64) not in best and m in longer]
    if pairs:
        drops = {m: acc(r, "L64_kv4") - acc(r, HARDEST) for m, r in pairs}
        out.append(("Gated recurrences (RWKV, RetNet, Mamba) lose recall as pairs grow at small d_model "
                    "(Zoology; BASED)", "agree" if all(v >= 0.3 for v in drops.values()) else "disagree",
                    "rule: at d_model 64, acc(L64 kv4) − acc(L256 kv64) ≥ 0.3 for each; measured "
                    + ", ".join(f"{m} {_fmt(acc(r, 'L64_kv4'))} → {_fmt(acc(r, HARDEST))}" for m, r in pairs)
                    + "".join(f"; {m} d64 did not learn (left out)" for m in ("rwkv6", "retnet", "mamba2")
                              if (m, 64) in ran and (m, 64) not in best and m not in longer)))
    else:
        out.append(("Gated recurrences lose recall as pairs grow at small d_model", "pending", "no runs yet"))
    # 3. the state-size claim at 1.3e5
    recurrent = [
        (k, r) for k, r in best.items() if k[0].startswith(("based", "deltanet", "gated_deltanet", "swa"))
    ]
    if recurrent:
        top = max(r["state_sizes"][max(r["state_sizes"], key=int)] for _, r in recurrent)
        listing = "; ".join(
            f"{m} d{d}: {_fmt(acc(r, HARDEST))} at {r['state_sizes'][max(r['state_sizes'], key=int)]:,}"
            for (m, d), r in sorted(recurrent)
        )
        out.append(
            (
                "BASED, DeltaNet, Gated DeltaNet reach ≥ 0.99 near 1.3e5 state numbers while SWA needs far "
                "more (Zoology's state-size figure)",
                "not testable at this scale" if top < 1e5 else "see numbers",
                f"the largest state here is {top:,} numbers (L256 kv64 accuracy at state): {listing}",
            )
        )
    # 4. accuracy rises with state along each family
    families = {"BASED feature_dim 8/16/24": ["based_f8", "based_f16", "based_f24"],
                "SWA window 16/32/128": ["swa_w16", "swa_w32", "swa_w128"]}
    for label, members in families.items():
        for d in d_models:
            if not have(*[(m, d) for m in members]):
                out.append((f"Recall rises with state along {label}, d_model {d} (BASED)", "pending",
                            "runs missing"))
                continue
            seq = [
                (
                    best[(m, d)]["state_sizes"][max(best[(m, d)]["state_sizes"], key=int)],
                    acc(best[(m, d)], HARDEST),
                    m,
                )
                for m in members
            ]
            seq.sort()
            rising = all(b[1] >= a[1] - 0.02 for a, b in zip(seq, seq[1:]))
            out.append((f"Recall rises with state along {label}, d_model {d} (BASED)",
                        "agree" if rising else "disagree",
                        "rule: L256 kv64 accuracy non-decreasing in state (0.02 slack): "
                        + ", ".join(f"{m} {s:,} → {_fmt(a)}" for s, a, m in seq)))
    # 5. MoM: several memories vs one expanded memory of the same state
    if have(("mom_gdn", 64), ("mom_one_x5", 64)):
        a, b = best[("mom_gdn", 64)], best[("mom_one_x5", 64)]
        out.append(
            (
                "Several routed memories beat one memory of the same state (MoM)",
                "agree" if acc(a, HARDEST) > acc(b, HARDEST) else "disagree",
                f"d_model 64, L256 kv64: MoM (4 routed + shared) {_fmt(acc(a, HARDEST))} vs one memory ×5 "
                f"{_fmt(acc(b, HARDEST))}; mean {_fmt(acc(a))} vs {_fmt(acc(b))}",
            )
        )
    elif {("mom_gdn", 64), ("mom_one_x5", 64)} <= ran:
        reruns = [r for r in seed_rows or [] if r["point"]["mixer"] in ("mom_gdn", "mom_one_x5")
                  and r["d_model"] == 64]
        evidence = (
            "mom_gdn and/or mom_one_x5 at d_model 64 did not learn MQAR within the budget (listed above)"
            + "".join(
                f"; {r['point']['mixer']} with {r['point'].get('variant', 'another seed')}: L64 kv4 "
                f"{_fmt(acc(r, 'L64_kv4'))}, {HARDEST.replace('_', ' ')} {_fmt(acc(r, HARDEST))}"
                for r in sorted(reruns, key=lambda r: r["point"]["mixer"])
            )
        )
        probe = {r["point"].get("variant"): r for r in mom_rows or []}
        wide = [(v, r) for v, r in sorted(probe.items()) if v is not None]
        evidence += "".join(
            f"; probe d_model {r['d_model']} {v}: {HARDEST.replace('_', ' ')} {_fmt(acc(r, HARDEST))} "
            f"at {r['state_sizes'][max(r['state_sizes'], key=int)]:,} state"
            for v, r in wide
        )
        verdict = "not testable at this scale"
        if {"top2", "one_x5"} <= set(probe) and learnt(probe["top2"]) and learnt(probe["one_x5"]):
            routed, one = acc(probe["top2"], HARDEST), acc(probe["one_x5"], HARDEST)
            verdict = "agree (probe)" if routed > one else "disagree (probe)"
            relation = ">" if routed > one else "<" if routed < one else "="
            evidence += (
                f"; rule at the probe's width: routed top-2 {_fmt(routed)} {relation} one memory {_fmt(one)}"
            )
        out.append(("Several routed memories beat one memory of the same state (MoM)", verdict, evidence))
    else:
        out.append(("Several routed memories beat one memory of the same state (MoM)", "pending",
                    "mom_gdn / mom_one_x5 runs missing"))
    once, twice = "L256_kv32", "L256_kv32_x2"
    # JRT's argument is about a fixed-size memory: the growing states (attention, its window, FoX,
    # log-linear's levels) are left out
    jrt = [(k, r) for k, r in sorted(best.items())
           if not k[0].startswith(("attention", "swa", "fox", "loglinear"))
           and f"val/acc/{twice}" in r["metrics"]]
    if jrt:
        room = [
            (k, r) for k, r in jrt if acc(r, once) < 0.98
        ]  # the cells with headroom on the read-once slice
        helped = sum(acc(r, twice) - acc(r, once) > 0.01 for _, r in room)
        hurt = sum(acc(r, twice) - acc(r, once) < -0.01 for _, r in jrt)
        out.append(
            (
                "Reading the context twice helps recurrent models (JRT)",
                "agree" if room and helped > len(room) / 2 and not hurt else "disagree",
                f"rule: read twice beats read once (L256 kv32) by > 0.01 for most recurrent cells below 0.98 "
                f"read once, and hurts none by > 0.01 (trained on one pass); {helped} of {len(room)} helped, "
                f"{hurt} hurt: "
                + ", ".join(f"{m} d{d} {_fmt(acc(r, once))} → {_fmt(acc(r, twice))}" for (m, d), r in jrt),
            )
        )
    else:
        out.append(
            ("Reading the context twice helps recurrent models (JRT)", "pending", "no JRT test slices yet")
        )
    out.append(log_linear_vs_mamba2(every, seed_rows or []))
    out.append(fox_vs_attention(every, seed_rows or []))
    out.append(lr_window(lr_rows or []))
    return out


def _other_seeds(seed_rows: list[dict], mixer: str, d_model: int) -> str:
    found = [r for r in seed_rows if r["point"].get("mixer") == mixer and r["d_model"] == d_model]
    return "".join(f"; {mixer} d{d_model} {r['point'].get('variant', 'another seed')}: mean {_fmt(acc(r))}"
                   for r in found)


def log_linear_vs_mamba2(cells_: dict[tuple[str, int], dict], seed_rows: list[dict]) -> tuple[str, str, str]:
    """Guo et al. (2025): log-linear Mamba-2 recalls better than Mamba-2. Rule: at each d_model where either
    learnt MQAR (L64 kv4 ≥ LEARNT), the log-linear form's mean accuracy over the test slices is higher by
    ≥ 0.05; not testable where neither learnt (non-learners count here: the claim is which one learns)."""
    claim = "Log-linear Mamba-2 recalls better than Mamba-2 at the same width (Guo et al., 2025)"
    pairs = [(d, cells_[("loglinear_mamba2", d)], cells_[("mamba2", d)])
             for d in sorted({d for m, d in cells_ if m == "loglinear_mamba2"}) if ("mamba2", d) in cells_]
    if not pairs:
        return claim, "pending", "loglinear_mamba2 / mamba2 runs missing"
    decided = [(d, a, b) for d, a, b in pairs if learnt(a) or learnt(b)]
    if not decided:
        verdict = "not testable at this scale"
    else:
        verdict = "agree" if all(acc(a) - acc(b) >= 0.05 for _, a, b in decided) else "disagree"
    evidence = (f"rule: mean test accuracy higher by ≥ 0.05 wherever either learnt (L64 kv4 ≥ {LEARNT}); "
                + "; ".join(f"d{d}: log-linear {_fmt(acc(a))} (L256 kv64 {_fmt(acc(a, HARDEST))}, state "
                            f"{_state(a):,}) vs Mamba-2 {_fmt(acc(b))} ({_fmt(acc(b, HARDEST))}, state "
                            f"{_state(b):,})" + ("" if learnt(a) or learnt(b) else ", neither learnt")
                            for d, a, b in pairs)
                + "".join(_other_seeds(seed_rows, m, d) for d, _, _ in decided
                          for m in ("loglinear_mamba2", "mamba2")))
    return claim, verdict, evidence


def fox_vs_attention(cells_: dict[tuple[str, int], dict], seed_rows: list[dict]) -> tuple[str, str, str]:
    """Lin et al. (ICLR 2025): the forget gate costs softmax attention none of its recall. Rule: FoX's best
    cell at each d_model reaches ≥ 0.99 on every slice, as attention does."""
    claim = "FoX keeps softmax attention's recall (Lin et al., ICLR 2025)"
    fox = [(d, r) for (m, d), r in sorted(cells_.items()) if m == "fox"]
    if not fox:
        return claim, "pending", "fox runs missing"
    worst = {d: min(acc(r, k.split("/", 2)[2]) for k in r["metrics"] if k.startswith("val/acc/"))
             for d, r in fox}
    verdict = "agree" if min(worst.values()) >= 0.99 else "disagree"
    attention = [(d, cells_[("attention", d)]) for d, _ in fox if ("attention", d) in cells_]
    return claim, verdict, ("rule: min accuracy over slices ≥ 0.99 at each d_model; FoX "
                            + ", ".join(f"d{d} {_fmt(w)}" for d, w in worst.items())
                            + "".join(f"; attention d{d} mean {_fmt(acc(r))}" for d, r in attention)
                            + "".join(_other_seeds(seed_rows, "fox", d) for d, _ in fox))


def _state(row: dict) -> int:
    """The row's decoding state (numbers) at the longest test length."""
    return row["state_sizes"][max(row["state_sizes"], key=int)]


LR_CLAIM = "Recurrent models learn MQAR only inside a narrow learning-rate window (Okpekpe & Orvieto, 2025)"


def lr_grid(lr_rows: list[dict]) -> dict[tuple[str, int], list[tuple[float, dict]]]:
    """(mixer, d_model) → [(lr, row)] in increasing lr, from the ``<sweep>_lr`` sweep."""
    out: dict[tuple[str, int], list[tuple[float, dict]]] = {}
    for r in lr_rows:
        out.setdefault((r["point"]["mixer"], r["d_model"]), []).append((r["point"]["model.lr"], r))
    return {k: sorted(v, key=lambda x: x[0]) for k, v in sorted(out.items())}


def lr_window(lr_rows: list[dict]) -> tuple[str, str, str]:
    """Agree when every cell that learns at some rate of the finer grid also fails at a neighbouring rate
    of it (an edge between two adjacent rates, ≤ 2.6× apart) and does not learn at every rate. Cells that
    learn at no rate say nothing about the window and are listed apart."""
    grid = lr_grid(lr_rows)
    if not grid:
        return LR_CLAIM, "pending", "no finer learning-rate grid yet (configs/sweeps/recall_map_cpu_lr.yaml)"
    learners, never, edges_ok, open_top = [], [], True, False
    for (mixer, d), points in grid.items():
        flags = [learnt(r) for _, r in points]
        listing = ", ".join(f"{lr:g}: {_fmt(acc(r, 'L64_kv4'))}" for lr, r in points)
        if not any(flags):
            never.append(f"{mixer} d{d}")
            continue
        edges = [f"{a:g} → {b:g}" for (a, _), (b, _), fa, fb in zip(points, points[1:], flags, flags[1:])
                 if fa != fb and b / a <= 2.6]
        top_open = flags[-1]
        open_top |= top_open
        edges_ok &= bool(edges) and not all(flags)
        learners.append(f"{mixer} d{d} (L64 kv4 by lr: {listing}; edge {', '.join(edges) or 'none'}"
                        + ("; still learns at the grid's largest rate" if top_open else "") + ")")
    rule = (f"rule: each cell that learns (L64 kv4 ≥ {LEARNT}) at some rate of the grid also fails at "
            "an adjacent rate ≤ 2.6× away")
    evidence = rule + ". " + "; ".join(learners) + (
        f". Learnt at no rate in 1,000 steps (no window seen): {', '.join(never)}" if never else "")
    if not learners:
        return LR_CLAIM, "not testable at this scale", evidence
    if not edges_ok:
        return LR_CLAIM, "disagree", evidence
    one_edge = "agree (one edge seen; the other lies beyond the grid)"
    return LR_CLAIM, one_edge if open_top else "agree", evidence


SEEDS = (1,)  # further seeds at each mixer's best cell (the map itself is seed 0)


def best_cells(best: dict[tuple[str, int], dict]) -> dict[str, dict]:
    """Each mixer's best (d_model, lr) row: highest mean accuracy, the smaller d_model on a tie."""
    out: dict[str, dict] = {}
    for (mixer, d), r in sorted(best.items(), key=lambda kv: kv[0][1]):
        if mixer not in out or acc(r) > acc(out[mixer]):
            out[mixer] = r
    return out


def best_cell_bases(source, rows: list[dict]) -> tuple[dict, list[str]]:
    """One sweep base entry per mixer at its best cell of ``source`` (its config, its own settings, the
    cell's d_model and lr). Only mixers whose every map run has finished are included (their best cell is
    final), so a sweep from them can start while the map still trains. Returns the entries and the mixers
    left out."""
    planned: dict[str, int] = {}
    for point in expand(source, wandb=False):
        planned[point.values["mixer"]] = planned.get(point.values["mixer"], 0) + 1
    finished: dict[str, int] = {}
    for r in rows:
        finished[r["point"]["mixer"]] = finished.get(r["point"]["mixer"], 0) + 1
    waiting = sorted(m for m, n in planned.items() if finished.get(m, 0) < n)
    base = {}
    for mixer, r in sorted(best_cells(cells(rows)).items()):
        if mixer in waiting:
            continue
        settings = {
            **source.base_sets.get(mixer, {}),
            "model.architecture.d_model": r["point"]["model.architecture.d_model"],
            source.lr_key: r["point"][source.lr_key],
        }
        base[mixer] = {"config": source.base[mixer], "set": settings}
    return base, waiting


def seeds_sweep(sweep_path: Path, rows: list[dict]) -> tuple[dict, list[str]]:
    """A sweep spec that reruns each mixer's best cell with the seeds in SEEDS: the best cells
    (:func:`best_cell_bases`), the map's fixed settings, a seed axis; rewriting the file later adds the
    mixers still training. Returns the spec and the mixers left out."""
    source = load_sweep(sweep_path)
    base, waiting = best_cell_bases(source, rows)
    return {
        "name": f"{source.name}_seeds",
        "description": f"{source.name}: each mixer's best cell again with seeds {', '.join(map(str, SEEDS))}",
        "base": base,
        "fixed": source.fixed,
        "grid": {"mixer": list(base)},
        "variants": {f"seed{s}": {"seed_everything": s, "data.init_args.train_seed": s} for s in SEEDS},
    }, waiting


MQAR_VARIANTS = {  # Zoology's two newer recall probes, as configs/probes/{forgetting,compositional}_mqar.yaml
    "forgetting": "configs/probes/forgetting_mqar.yaml",
    "compositional": "configs/probes/compositional_mqar.yaml",
}


def mqar_variants_sweep(sweep_path: Path, rows: list[dict]) -> tuple[dict, list[str]]:
    """A sweep spec that trains each mixer's best recall-map cell afresh on forgetting and compositional
    MQAR: the best cells, each probe config's data module, slices and epochs (a variant each), seed 0.
    Mixers whose best cell did not learn plain MQAR (:func:`non_learners`) are left out: their harder
    variants would only repeat that."""
    source = load_sweep(sweep_path)
    base, waiting = best_cell_bases(source, rows)
    base = {m: b for m, b in base.items() if m not in non_learners(rows)}
    variants = {}
    for name, path in MQAR_VARIANTS.items():
        probe = yaml.safe_load((ROOT / path).read_text())
        variants[name] = {"data": probe["data"], "trainer.max_epochs": 3}
    return {
        "name": f"{source.name}_variants",
        "description": f"{source.name}: each mixer's best cell trained afresh on forgetting and "
                       "compositional MQAR",
        "base": base,
        "fixed": {k: v for k, v in source.fixed.items() if not k.startswith(("data.", "trainer.max_epochs"))},
        # MoM last: one of its steps costs about ten of the others', so a sweep stopped early has the rest
        "grid": {"mixer": sorted(base, key=lambda m: (m.startswith("mom"), m))},
        "variants": variants,
    }, waiting


def non_learners(rows: list[dict]) -> list[str]:
    """Mixers whose best recall-map cell did not learn MQAR (L64 kv4 < LEARNT)."""
    return sorted(m for m, r in best_cells(cells(rows)).items() if not learnt(r))


def seed_spread(rows_seed0: dict[str, dict], seed_rows: list[dict]) -> dict[str, list[float]]:
    """mixer -> the mean accuracies of its best cell over seed 0 and the seed reruns."""
    out = {m: [acc(r)] for m, r in rows_seed0.items()}
    for r in seed_rows:
        if r["point"]["mixer"] in out:
            out[r["point"]["mixer"]].append(acc(r))
    return out


def extra_tables(sweep: str, variant_rows: list[dict] | None, long_rows: list[dict] | None,
                 skipped: list[str] = ()) -> list[str]:
    """Markdown for the forgetting / compositional MQAR runs at each best cell (``<sweep>_variants``) and
    the longer-budget reruns (``<sweep>_long``), when they exist; ``skipped``: the mixers the variants
    sweep leaves out (their best cell did not learn plain MQAR)."""
    lines = []
    if variant_rows:
        lines += ["", f"Forgetting and compositional MQAR at each mixer's best cell, trained afresh "
                  f"(`configs/sweeps/{sweep}_variants.yaml`, seed 0): accuracy per test slice."
                  + (f" Not trained: {', '.join(skipped)} (their best cell did not learn plain MQAR)."
                     if skipped else ""), ""]
        for variant in MQAR_VARIANTS:
            runs = sorted((r for r in variant_rows if r["point"].get("variant") == variant),
                          key=lambda r: r["point"]["mixer"])
            if not runs:
                continue
            names = {k.split("/", 2)[2] for r in runs for k in r["metrics"] if k.startswith("val/acc/")}
            names = sorted(names, key=lambda n: [int(x) for x in re.findall(r"\d+", n)])  # by length, pairs
            lines += [f"| {variant} MQAR | d_model | lr | " + " | ".join(names) + " | mean |",
                      "|---|---|---|" + "---|" * (len(names) + 1)]
            lines += [f"| {r['point']['mixer']} | {r['d_model']} | {float(run_setting(r, 'model.lr')):g} | "
                      + " | ".join(_fmt(acc(r, n)) for n in names) + f" | {_fmt(acc(r))} |" for r in runs]
            lines.append("")
    if long_rows:
        lines += ["", f"Longer budget for the still-rising non-learners (`configs/sweeps/{sweep}_long.yaml`, "
                  "16 epochs instead of 4):", "", "| mixer | d_model | lr | steps | L64 kv4 | mean | "
                  "val/acc per epoch |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['point']['mixer']} | {r['d_model']} | {r['point']['model.lr']:g} | {r['steps']} | "
                  f"{_fmt(acc(r, 'L64_kv4'))} | {_fmt(acc(r))} | "
                  + " ".join(f"{x:.3f}" for x in r.get("val_acc_by_epoch", [])) + " |"
                  for r in sorted(long_rows, key=lambda r: r["point"]["mixer"])]
    return lines


def markdown(rows: list[dict], sweep: str, seed_rows: list[dict] | None = None,
             mom_rows: list[dict] | None = None, lr_rows: list[dict] | None = None,
             variant_rows: list[dict] | None = None, long_rows: list[dict] | None = None) -> str:
    best = cells(rows)
    slices = sorted({k.split("/", 2)[2] for r in rows for k in r["metrics"] if k.startswith("val/acc/")},
                    key=slice_order)
    length = max((int(n) for r in rows for n in r.get("state_sizes", {})), default=0)
    lines = [
        f"# The recall map ({sweep})",
        "",
        "```bash",
        f"python -m recall_lm.evals.sweeps.sweep configs/sweeps/{sweep}.yaml --jobs 2     # resumable",
        f"python -m recall_lm.evals.sweeps.sweep configs/sweeps/{sweep}.yaml --collect",
        f"python -m recall_lm.evals.sweeps.recall_claims --sweep {sweep}",
        "```",
        "",
        f"{len(rows)} runs finished, {len(best)} (mixer, d_model) cells, seed 0 "
        + (
            f"(reruns with seed 1 at {len({r['point']['mixer'] for r in seed_rows})} of the "
            f"{len(best_cells(best))} mixers' best cells: the seed-spread table below)"
            if seed_rows
            else "(the seed spread at each best cell is still to run)"
        )
        + ". Best learning rate per cell by final validation accuracy.",
        "",
        f"![accuracy vs state](../evals/results/sweeps/{sweep}/acc_vs_state.png)",
        "",
        "| mixer | d_model | lr | params | state L="
        + str(length)
        + " | bytes | "
        + " | ".join(slices)
        + " | time (s) |",
        "|---|---|---|---|---|---|" + "---|" * len(slices) + "---|",
    ]
    for (mixer, d), r in sorted(best.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        n = str(length)
        lines.append(f"| {mixer} | {d} | {r['point']['model.lr']:g} | {r['params']:,} | "
                     f"{r.get('state_sizes', {}).get(n, 0):,} | {r.get('state_bytes', {}).get(n, 0):,} | "
                     + " | ".join(_fmt(acc(r, s)) for s in slices) + f" | {r['seconds']} |")
    if seed_rows:
        spread = seed_spread(best_cells(best), seed_rows)
        lines += ["", "Seed spread at each mixer's best cell (mean accuracy over the test slices):", "",
                  "| mixer | d_model | lr | seeds | mean accuracies | spread |", "|---|---|---|---|---|---|"]
        for mixer, r in sorted(best_cells(best).items()):
            values = spread[mixer]
            if len(values) < 2:
                continue  # its seed rerun has not run yet
            lines.append(
                f"| {mixer} | {r['point']['model.architecture.d_model']} | {r['point']['model.lr']:g} | "
                f"{len(values)} | "
                + ", ".join(_fmt(v) for v in values)
                + f" | {_fmt(max(values) - min(values))} |"
            )
        onset = sorted(
            m
            for m, r in best_cells(best).items()
            if len({learnt(x) for x in [r] + [x for x in seed_rows if x["point"]["mixer"] == m]}) > 1
        )
        if onset:
            lines += [
                "",
                "Learnt with one seed and not the other (L64 kv4 ≥ "
                f"{LEARNT} for one only): "
                + ", ".join(onset)
                + ". Within 1,000 steps whether these leave the loss plateau depends "
                "on the seed, so a single seed's 'did not learn' is weak evidence for them.",
            ]
    if lr_rows:
        grid = lr_grid(lr_rows)
        rates = sorted({lr for points in grid.values() for lr, _ in points})
        lines += ["", f"The non-learners on a finer learning-rate grid (`configs/sweeps/{sweep}_lr.yaml`, "
                  "seed 0, the map's budget): accuracy on L64 kv4 / mean over the test slices.", "",
                  "| mixer | d_model | " + " | ".join(f"lr {r:g}" for r in rates) + " |",
                  "|---|---|" + "---|" * len(rates)]
        for (mixer, d), points in grid.items():
            by_lr = dict(points)
            lines.append(f"| {mixer} | {d} | " + " | ".join(
                f"{_fmt(acc(by_lr[r], 'L64_kv4'))} / {_fmt(acc(by_lr[r]))}" if r in by_lr else ""
                for r in rates) + " |")
    lines += extra_tables(sweep, variant_rows, long_rows, non_learners(rows))
    lines += ["", "## The papers' claims", "", "| claim | verdict | evidence |", "|---|---|---|"]
    lines += [f"| {c} | {v} | {e} |" for c, v, e in claims(best, seed_rows, mom_rows, lr_rows, long_rows)]
    return "\n".join(lines) + "\n"


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", default="recall_map_cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "recall_map.md")
    parser.add_argument(
        "--write-seeds-sweep",
        type=Path,
        default=None,
        help="write the sweep YAML that reruns each mixer's best cell with more seeds, and stop",
    )
    parser.add_argument(
        "--write-variants-sweep",
        type=Path,
        default=None,
        help="write the sweep YAML that trains each mixer's best cell on forgetting and compositional MQAR",
    )
    args = parser.parse_args(argv)
    rows = load_rows_or_exit(args.sweep)
    if args.write_seeds_sweep or args.write_variants_sweep:
        out = args.write_seeds_sweep or args.write_variants_sweep
        make, flag = ((seeds_sweep, "--write-seeds-sweep") if args.write_seeds_sweep
                      else (mqar_variants_sweep, "--write-variants-sweep"))
        spec, waiting = make(ROOT / "configs" / "sweeps" / f"{args.sweep}.yaml", rows)
        header = (
            f"# Written by python -m recall_lm.evals.sweeps.recall_claims {flag} from "
            f"{len(rows)} finished runs of {args.sweep}.\n"
            f"# Run: python -m recall_lm.evals.sweeps.sweep {out} --jobs 2\n"
        )
        if waiting:
            header += (
                f"# Not yet here (map runs unfinished): {', '.join(waiting)}; "
                "rewrite this file when they finish.\n"
            )
        out.write_text(header + yaml.safe_dump(spec, sort_keys=False, width=120))
        print(f"wrote {out} ({len(spec['base'])} cells; waiting for {waiting or 'none'})")
        return ""
    seeds_folder = RESULTS / f"{args.sweep}_seeds" / "runs"
    seed_rows = load_rows(f"{args.sweep}_seeds") if seeds_folder.is_dir() else None
    mom_rows = load_rows(f"{args.sweep}_mom") if (RESULTS / f"{args.sweep}_mom" / "runs").is_dir() else None
    extra = {name: load_rows(f"{args.sweep}_{name}") if (RESULTS / f"{args.sweep}_{name}" / "runs").is_dir()
             else None for name in ("lr", "variants", "long")}
    text = markdown(rows, args.sweep, seed_rows, mom_rows, extra["lr"], extra["variants"], extra["long"])
    args.out.write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    main()
