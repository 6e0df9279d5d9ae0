"""The state-tracking map's verdicts on the papers' claims: \
``python -m recall_lm.evals.sweeps.state_tracking_claims [--sweep state_tracking_cpu]``.

    python -m recall_lm.evals.sweeps.sweep configs/sweeps/state_tracking_cpu.yaml --jobs 2   # resumable
    python -m recall_lm.evals.sweeps.sweep configs/sweeps/state_tracking_cpu.yaml --collect
    python -m recall_lm.evals.sweeps.state_tracking_claims

Reads the per-run JSON the sweep's ``--collect`` commits (``evals/results/sweeps/<sweep>/runs/*.json``).
A run's sweep point names its cell ``<task>-<mixer>`` (``parity-mamba2_neg``) and its seed
(``variant: seed0``). Writes ``docs/state_tracking.md`` (every cell per seed, then one verdict per claim:
agree / disagree / not testable at this scale / pending, with the rule and the numbers of every seed) and
two plots beside the sweep's tables: accuracy against test length per mixer, and a mixer × task grid.

Accuracies are what the probes score (``recall_lm.training.task.per_example_accuracy``): parity and
modular arithmetic one answer per sequence, reported as Grazzi et al. do, scaled so that chance is 0
((acc − 0.5)/0.5 for parity, (acc − 0.2)/0.8 mod 5); word problems and copying the fraction of positions
right per sequence (every prefix product; every copied letter and the end mark), averaged.
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass
from pathlib import Path

from recall_lm.evals.common import ROOT
from recall_lm.evals.sweeps.recall_claims import RESULTS, load_rows_or_exit

SOLVED = 0.9  # a cell solves a task when its best seed reaches this (scaled for parity and mod 5)
FAILED = 0.5  # ... and fails it when its best seed stays below this
GAP = 0.1  # a comparison between cells counts when it exceeds both cells' seed spread and this


@dataclass(frozen=True)
class Task:
    """A probe as the map scores it: chance level, the slices of the training lengths, the longer ones."""

    title: str
    chance: float
    scaled: bool  # report (acc − chance)/(1 − chance), as the paper does


TASKS = {
    "parity": Task("parity (train 3–40, test 40–256)", 0.5, True),
    "modarith": Task("mod-5 arithmetic, no brackets (train 3–40, test 40–256)", 0.2, True),
    "A5": Task("A5 word problem (train length 16)", 1 / 60, False),
    "A4xZ5": Task("A4×Z5 word problem (train length 16)", 1 / 60, False),
    "Z60": Task("Z60 word problem (train length 16)", 1 / 60, False),
    "S3": Task("S3 word problem, 1 layer (train length 32)", 1 / 6, False),
    "copying": Task("copying (train 8–32 letters)", 1 / 26, False),
}
IN_DISTRIBUTION = {
    "parity": ["parity_L3-40"],
    "modarith": ["mod_L3-40"],
    "A5": ["A5_L16"],
    "A4xZ5": ["A4xZ5_L16"],
    "Z60": ["Z60_L16"],
    "S3": ["S3_L32"],
    "copying": ["copy_L16", "copy_L32"],
}
LONGER = {
    "parity": ["parity_L40-64", "parity_L65-128", "parity_L129-256"],
    "modarith": ["mod_L40-64", "mod_L65-128", "mod_L129-256"],
    "A5": ["A5_L32"],
    "A4xZ5": ["A4xZ5_L32"],
    "Z60": ["Z60_L32"],
    "S3": ["S3_L64", "S3_L128"],
    "copying": ["copy_L64"],
}
MIXERS = {
    "mamba2": "Mamba-2 [0,1]",
    "mamba2_neg": "Mamba-2 [−1,1]",
    "deltanet": "DeltaNet β∈(0,1)",
    "deltanet_neg": "DeltaNet β∈(0,2)",
    "mamba3": "Mamba-3",
    "attention": "attention (RoPE)",
    "attention_hard_alibi": "attention (Hard-ALiBi)",
    "gdp_nh1": "Gated DeltaProduct n_h=1",
    "gdp_nh2": "Gated DeltaProduct n_h=2",
    "gdp_nh3": "Gated DeltaProduct n_h=3",
    "gated_deltanet": "Gated DeltaNet β∈(0,1)",
    "gated_deltanet_neg": "Gated DeltaNet β∈(0,2)",
    "rwkv7": "RWKV-7",
    "kda_neg": "KDA β∈(0,2)",
    "fox": "FoX",
    "loglinear_mamba2": "log-linear Mamba-2",
}


def split_cell(cell: str) -> tuple[str, str]:
    """``parity-mamba2_neg`` → ("parity", "mamba2_neg")."""
    task, _, mixer = cell.partition("-")
    return task, mixer


def by_cell(rows: list[dict]) -> dict[str, list[dict]]:
    """cell name → its runs, ordered by seed variant."""
    out: dict[str, list[dict]] = {}
    for r in sorted(rows, key=lambda r: str(r["point"].get("variant", ""))):
        out.setdefault(r["point"]["mixer"], []).append(r)
    return out


def accuracy(row: dict, slice_name: str, task: str) -> float:
    """The slice's accuracy, scaled to chance 0 where the task's paper scales it."""
    value = row["metrics"].get(f"val/acc/{slice_name}")
    if value is None:
        return math.nan
    t = TASKS[task]
    return (value - t.chance) / (1 - t.chance) if t.scaled else float(value)


def mean_over(row: dict, slices: list[str], task: str) -> float:
    values = [accuracy(row, s, task) for s in slices]
    return math.nan if not values or any(math.isnan(v) for v in values) else sum(values) / len(values)


def in_dist(row: dict) -> float:
    task, _ = split_cell(row["point"]["mixer"])
    return mean_over(row, IN_DISTRIBUTION[task], task)


def longer(row: dict) -> float:
    task, _ = split_cell(row["point"]["mixer"])
    return mean_over(row, LONGER[task], task)


def slice_length(name: str) -> int:
    """``parity_L65-128`` → 128, ``A5_L32`` → 32, ``copy_L64`` → 64: the longest length in the slice."""
    return int(re.findall(r"\d+", name.rsplit("_L", 1)[1])[-1])


def _fmt(x: float) -> str:
    return "nan" if math.isnan(x) else f"{x:.2f}"


@dataclass
class Cell:
    """One cell's seeds, read through one of the measures (in_dist / longer)."""

    name: str
    values: list[float]

    @property
    def best(self) -> float:
        return max(self.values)

    @property
    def spread(self) -> float:
        return max(self.values) - min(self.values)

    def text(self) -> str:
        task, mixer = split_cell(self.name)
        return f"{MIXERS.get(mixer, mixer)} {', '.join(_fmt(v) for v in self.values)}"


def cell(cells: dict[str, list[dict]], name: str, measure) -> Cell | None:
    runs = cells.get(name, [])
    values = [measure(r) for r in runs]
    return Cell(name, values) if len(values) >= 2 and not any(math.isnan(v) for v in values) else None


def _missing(names: list[str], cells: dict[str, list[dict]]) -> str:
    return "runs missing (2 seeds each): " + ", ".join(f"{n} ({len(cells.get(n, []))} of 2)" for n in names)


def solved_vs_failed(claim: str, cells: dict, solver: str, failer: str) -> tuple[str, str, str]:
    """The pattern of Grazzi et al.'s and Mamba-3's parity claims: ``solver`` generalises to the longer
    lengths (best seed ≥ SOLVED, scaled) and ``failer`` does not (best seed < FAILED). Not testable
    when the solver does not even fit the training lengths within the budget."""
    fit, gen = cell(cells, solver, in_dist), cell(cells, solver, longer)
    other_fit, other = cell(cells, failer, in_dist), cell(cells, failer, longer)
    if not (fit and gen and other and other_fit):
        return claim, "pending", _missing([solver, failer], cells)
    rule = (
        f"rule: best seed's scaled accuracy on the test lengths ≥ {SOLVED} for the first, < {FAILED} for the "
        f"second; not testable if the first stays < {SOLVED} on the training lengths"
    )
    evidence = (
        f"{rule}. Training lengths: {fit.text()}; {other_fit.text()}. "
        f"Test lengths: {gen.text()}; {other.text()}"
    )
    if fit.best < SOLVED:
        return claim, "not testable at this scale", evidence + " (the first did not fit the training lengths)"
    if gen.best >= SOLVED and other.best < FAILED:
        return claim, "agree", evidence
    if other.best >= SOLVED or gen.best < FAILED:
        return claim, "disagree", evidence
    return claim, "not testable at this scale", evidence + " (between the thresholds)"


def claims(rows: list[dict]) -> list[tuple[str, str, str]]:
    cells = by_cell(rows)
    out = [
        solved_vs_failed(
            "Parity needs negative eigenvalues: diagonal (Grazzi et al., ICLR 2025)",
            cells,
            "parity-mamba2_neg",
            "parity-mamba2",
        ),
        solved_vs_failed(
            "Parity needs negative eigenvalues: Householder (Grazzi et al., ICLR 2025)",
            cells,
            "parity-deltanet_neg",
            "parity-deltanet",
        ),
        solved_vs_failed(
            "Parity needs negative eigenvalues: gated Householder (Grazzi et al.'s claim on Gated DeltaNet)",
            cells,
            "parity-gated_deltanet_neg",
            "parity-gated_deltanet",
        ),
        solved_vs_failed(
            "Mamba-3 solves parity where Mamba-2 fails (Mamba-3)", cells, "parity-mamba3", "parity-mamba2"
        ),
    ]
    out.append(mod_arithmetic(cells))
    out.append(illusion_of_state(cells))
    out.append(deltaproduct(cells))
    out.append(copying(cells))
    return out


def mod_arithmetic(cells: dict) -> tuple[str, str, str]:
    claim = (
        "Mod-5 arithmetic needs a non-diagonal transition: DeltaNet [−1,1] beats Mamba-2 [−1,1] "
        "(Grazzi et al.)"
    )
    names = ["modarith-deltanet_neg", "modarith-mamba2_neg"]
    house, diag = (cell(cells, n, longer) for n in names)
    house_fit, diag_fit = (cell(cells, n, in_dist) for n in names)
    if not (house and diag and house_fit and diag_fit):
        return claim, "pending", _missing(names, cells)
    margin = max(GAP, house.spread, diag.spread)
    evidence = (
        f"rule: DeltaNet's best seed beats Mamba-2's by > max({GAP}, either seed spread) on the test "
        f"lengths (scaled); not testable if neither reaches {FAILED} on the training lengths. Training "
        f"lengths: {house_fit.text()}; {diag_fit.text()}. Test lengths: {house.text()}; {diag.text()}"
    )
    if max(house_fit.best, diag_fit.best) < FAILED:
        return claim, "not testable at this scale", evidence
    if house.best - diag.best > margin:
        return claim, "agree", evidence
    return claim, ("disagree" if diag.best - house.best > margin else "not testable at this scale"), evidence


def illusion_of_state(cells: dict) -> tuple[str, str, str]:
    """Merrill, Petty & Sabharwal: at a fixed depth, the non-solvable A5 is harder than the solvable
    A4×Z5 and the abelian Z60 (same order) for attention and for a diagonal SSM. Judged on the training
    length (they train and test on one length) per mixer: A5's best seed below both others' worst by more
    than GAP and the spreads."""
    claim = (
        "A5 is harder than A4×Z5 and Z60 at fixed depth (2 layers) for attention and Mamba-2 "
        "(Illusion of State)"
    )
    parts, verdicts = [], []
    for mixer in ("attention", "mamba2"):
        names = [f"{g}-{mixer}" for g in ("A5", "A4xZ5", "Z60")]
        got = [cell(cells, n, in_dist) for n in names]
        if not all(got):
            return claim, "pending", _missing(names, cells)
        a5, others = got[0], got[1:]
        margin = max(GAP, *(c.spread for c in got))
        easiest = max(c.best for c in others)
        parts.append(
            f"{MIXERS[mixer]} at length 16: "
            + "; ".join(f"{split_cell(c.name)[0]} {', '.join(_fmt(v) for v in c.values)}" for c in got)
        )
        if easiest < SOLVED:
            verdicts.append("not testable at this scale")
        elif all(min(c.values) - a5.best > margin for c in others):
            verdicts.append("agree")
        else:
            verdicts.append("disagree")
    rule = (
        f"rule: per mixer, A5's best seed below both A4×Z5's and Z60's worst seed by > max({GAP}, the "
        f"spreads), at the training length; not testable for a mixer that solves neither solvable "
        f"group (best < {SOLVED})"
    )
    verdict = (
        verdicts[0]
        if len(set(verdicts)) == 1
        else " / ".join(f"{MIXERS[m]}: {v}" for m, v in zip(("attention", "mamba2"), verdicts))
    )
    return claim, verdict, rule + ". " + ". ".join(parts)


def deltaproduct(cells: dict) -> tuple[str, str, str]:
    """Siems et al.: with one layer and negative eigenvalues, one Householder step per token (Gated
    DeltaNet) cannot solve S3 (a 3-cycle is a product of two reflections); n_h ≥ 2 can."""
    claim = "One layer solves S3 with n_h ≥ 2 Householder steps per token, not with 1 (DeltaProduct)"
    names = [f"S3-gdp_nh{n}" for n in (1, 2, 3)]
    fit = [cell(cells, n, in_dist) for n in names]
    gen = [cell(cells, n, longer) for n in names]
    if not all(fit) or not all(gen):
        return claim, "pending", _missing(names, cells)
    evidence = (
        f"rule: n_h = 1 best seed < {SOLVED} and n_h = 2, 3 best seeds ≥ {SOLVED} (token accuracy at the "
        f"training length 32); lengths 64 and 128 shown. Length 32: "
        + "; ".join(c.text() for c in fit)
        + ". Lengths 64–128: "
        + "; ".join(c.text() for c in gen)
    )
    if fit[0].best < SOLVED and all(c.best >= SOLVED for c in fit[1:]):
        return claim, "agree", evidence
    if fit[0].best >= SOLVED:
        return claim, "disagree", evidence
    return claim, "not testable at this scale", evidence + " (n_h ≥ 2 did not solve it within the budget)"


def copying(cells: dict) -> tuple[str, str, str]:
    """Jelassi et al.: attention with Hard-ALiBi copies strings longer than it trained on; a fixed-state
    model does worse once the string is long."""
    claim = (
        "Attention (Hard-ALiBi) copies strings longer than trained on; a fixed-state model (Mamba-2) "
        "does worse (Repeat After Me)"
    )
    names = ["copying-attention_hard_alibi", "copying-mamba2"]
    fit = [cell(cells, n, in_dist) for n in names]
    gen = [cell(cells, n, longer) for n in names]
    if not all(fit) or not all(gen):
        return claim, "pending", _missing(names, cells)
    att, ssm = gen
    margin = max(GAP, att.spread, ssm.spread)
    evidence = (
        f"rule: attention's best seed ≥ {SOLVED} at 64 letters (trained on ≤ 32) and Mamba-2's best seed "
        f"below attention's worst by > max({GAP}, the spreads); not testable if attention stays < "
        f"{SOLVED} on the training lengths. Letter accuracy, 16–32 letters: "
        + "; ".join(c.text() for c in fit)
        + ". 64 letters: "
        + "; ".join(c.text() for c in gen)
    )
    if fit[0].best < SOLVED:
        return claim, "not testable at this scale", evidence
    if att.best >= SOLVED and min(att.values) - ssm.best > margin:
        return claim, "agree", evidence
    return claim, "disagree", evidence


def markdown(rows: list[dict], sweep: str) -> str:
    cells = by_cell(rows)
    lines = [
        f"# The state-tracking map ({sweep})",
        "",
        "```bash",
        f"python -m recall_lm.evals.sweeps.sweep configs/sweeps/{sweep}.yaml --jobs 2 --first variant=seed0"
        "   # resumable",
        f"python -m recall_lm.evals.sweeps.sweep configs/sweeps/{sweep}.yaml --collect",
        f"python -m recall_lm.evals.sweeps.state_tracking_claims --sweep {sweep}",
        "```",
        "",
        f"{len(rows)} runs finished in {len(cells)} cells. Each cell is one task and one mixer, trained from "
        "scratch with two seeds (initialisation and training data). What each probe is and where it comes "
        "from: [probes.md](probes.md). Parity and mod 5 are scaled to chance 0 (1 = always right), as Grazzi "
        "et al. report them; word problems and copying are the fraction of positions right.",
        "",
        f"![accuracy vs length](../evals/results/sweeps/{sweep}/acc_vs_length.png)",
        "",
        f"![mixer × task](../evals/results/sweeps/{sweep}/mixer_task_grid.png)",
        "",
        "| task | mixer | params | state | seed | training lengths | longer | per slice | time (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in sorted(
        cells.items(),
        key=lambda kv: (
            list(TASKS).index(split_cell(kv[0])[0]) if split_cell(kv[0])[0] in TASKS else 99,
            kv[0],
        ),
    ):
        task, mixer = split_cell(name)
        if task not in TASKS:
            continue
        for r in runs:
            slices = sorted(
                (k.split("/", 2)[2] for k in r["metrics"] if k.startswith("val/acc/")), key=slice_length
            )
            per_slice = ", ".join(f"{s} {_fmt(accuracy(r, s, task))}" for s in slices)
            lines.append(
                f"| {task} | {MIXERS.get(mixer, mixer)} | {r['params']:,} | {r.get('state_size', 0):,} | "
                f"{r['point'].get('variant', '')} | {_fmt(in_dist(r))} | {_fmt(longer(r))} | {per_slice} | "
                f"{r['seconds']} |"
            )
    lines += ["", "## The papers' claims", "", "| claim | verdict | evidence |", "|---|---|---|"]
    lines += [f"| {c} | {v} | {e} |" for c, v, e in claims(rows)]
    return "\n".join(lines) + "\n"


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", default="state_tracking_cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "state_tracking.md")
    args = parser.parse_args(argv)
    rows = load_rows_or_exit(args.sweep)
    from recall_lm.evals.sweeps.state_tracking_plots import plot_grid, plot_length

    folder = RESULTS / args.sweep
    plot_length(rows, folder / "acc_vs_length.png")
    plot_grid(rows, folder / "mixer_task_grid.png")
    text = markdown(rows, args.sweep)
    args.out.write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    main()
