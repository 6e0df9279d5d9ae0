"""Grid sweeps of train.py runs: mixers × d_model × learning rate × any YAML key, best lr per model.

    # train what is not done yet
    python -m recall_lm.evals.sweeps.sweep configs/sweeps/mqar_cpu.yaml --jobs 2
    # list the runs and their commands
    python -m recall_lm.evals.sweeps.sweep configs/sweeps/mqar_cpu.yaml --dry-run
    # those points first
    python -m recall_lm.evals.sweeps.sweep configs/sweeps/mqar_cpu.yaml --jobs 2 --first model.lr=0.003
    # tables and plots from finished runs
    python -m recall_lm.evals.sweeps.sweep configs/sweeps/mqar_cpu.yaml --collect
    # the grid for W&B agents (evals/sweeps/wandb_sweep.py; --torchrun N to launch with torchrun)
    python -m recall_lm.evals.sweeps.sweep configs/sweeps/mqar_cpu.yaml --wandb-yaml sweep.yaml

A sweep YAML (see configs/sweeps/mqar_cpu.yaml):

    name: mqar_cpu                  # W&B group, runs/sweeps/<name>/, evals/results/sweeps/<name>/
    base: {attention: configs/mqar/attention.yaml, based: configs/mqar/based.yaml}   # or one config path
    # a base entry may also be {config: path, set: {dotted key: value}} (e.g. one config at two windows)
    fixed: {trainer.max_epochs: 4}  # dotted train.py keys set in every run
    grid:                           # the Cartesian product of these lists
      mixer: [attention, based]     # picks the base config (only when base is a map)
      model.architecture.d_model: [32, 64]
      model.lr: [1.0e-3, 3.0e-3]
    # optional: points matching every key are dropped
    exclude: [{mixer: based, model.architecture.d_model: 32}]
    variants:                       # optional: named bundles of settings, one more grid axis ("variant")
      zoology: {}                   # e.g. an ablation, one change at a time from the base config
      rmsnorm: {model.architecture.norm: rmsnorm}
    lr_key: model.lr                # optional (default model.lr): the key best-lr selection runs over
    project: recall-lm              # optional: the W&B project

Every point is ``train.py fit --config <base> --<key>=<value> ...`` in its own process (``--jobs`` at a
time, OMP threads split between them; evals/sweeps/train_runs.py), in runs/sweeps/<name>/<run name>/ with CSV
logs and a WandbLogger (group = the sweep name, tags = the point's values; offline unless logged in to
W&B, ``WANDB_MODE`` overrides; ``wandb sync runs/sweeps/<name>/*/wandb/offline-run-*`` uploads them later).
A run is done, and skipped, when its result.json exists in its run folder or its committed copy in
evals/results/sweeps/<name>/runs/<run>.json does (settings compared under today's key names), so a fresh
clone trains only the points the committed results lack, and ``--collect`` rebuilds every table and plot
from the committed files alone. As Zoology does, the
best learning rate of each model (every grid key but ``lr_key``) is the one with the highest final
validation accuracy. Outputs (evals/results/sweeps/<name>/): results.csv, results.md (every run),
best_lr.md / best_lr.csv, runs/<run>.json, acc_vs_dmodel.png, acc_vs_state.png and acc_vs_time.png
(evals/sweeps/plots.py).
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import yaml

from recall_lm.evals.common import machine_line
from recall_lm.evals.sweeps.train_runs import ROOT, TrainRun, is_running, run_many
from recall_lm.training.config_checks import config_tree, current_key

RESULTS = ROOT / "evals" / "results" / "sweeps"
RUNS = ROOT / "runs" / "sweeps"
SWEEP_KEYS = {"name", "base", "fixed", "grid", "exclude", "lr_key", "select", "project", "description",
              "variants"}
SELECT = {"val/acc": "the highest final validation accuracy `val/acc`, as Zoology does",
          "val/loss": "the lowest final validation loss `val/loss`"}  # what picks the best learning rate


@dataclass
class Sweep:
    """A parsed sweep YAML. ``base`` is one config path or a map mixer → config path; ``grid`` maps a
    dotted train.py key (or ``mixer``, or ``variant`` for the names of ``variants``) to its values;
    ``fixed`` maps dotted keys to one value each; ``variants`` maps a name to dotted keys → values."""

    name: str
    base: str | dict[str, str]
    grid: dict[str, list]
    fixed: dict = field(default_factory=dict)
    exclude: list[dict] = field(default_factory=list)
    lr_key: str = "model.lr"
    select: str = "val/acc"  # a key of SELECT
    project: str = "recall-lm"
    description: str = ""
    source: Path | None = None
    variants: dict[str, dict] = field(default_factory=dict)
    base_sets: dict[str, dict] = field(default_factory=dict)  # mixer -> dotted keys its base entry sets


@dataclass
class Point:
    """One run of a sweep: its name, grid values, base config and train.py arguments (after ``fit``)."""

    name: str
    values: dict
    config: str
    args: list[str]


def load_sweep(path: Path | str) -> Sweep:
    """Read and check a sweep YAML; a bad file raises ValueError/FileNotFoundError naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep file not found: {path}")
    spec = yaml.safe_load(path.read_text()) or {}
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: a sweep file is a mapping (name, base, grid, ...)")
    unknown = sorted(set(spec) - SWEEP_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown sweep keys {unknown}; allowed: {sorted(SWEEP_KEYS)}")
    variants = spec.get("variants") or {}
    if "base" not in spec or ("grid" not in spec and not variants):
        raise ValueError(
            f"{path}: a sweep needs 'base' (a config or a mixer → config map) and 'grid' or 'variants'"
        )
    if not isinstance(variants, dict) or any(
        not isinstance(v, dict) for v in variants.values() if v is not None
    ):
        raise ValueError(f"{path}: 'variants' maps a name to a map of dotted train.py keys → values")
    variants = {str(name): dict(v or {}) for name, v in variants.items()}
    bad_names = [n for n in variants if not n.replace("_", "").replace("-", "").replace(".", "").isalnum()]
    if bad_names:
        raise ValueError(
            f"{path}: variant names {bad_names} must be letters, digits, '_', '-' or '.' (run folder names)"
        )
    grid = spec.get("grid") or {}
    if "variant" in grid:
        raise ValueError(f"{path}: 'variant' is the axis of 'variants', not a grid key")
    if variants:
        grid = {"variant": list(variants), **grid}
    if not isinstance(grid, dict) or not grid or any(not isinstance(v, list) or not v for v in grid.values()):
        raise ValueError(f"{path}: 'grid' maps keys to non-empty lists of values")
    base, base_sets = spec["base"], {}
    if isinstance(base, dict):
        for mixer, entry in list(base.items()):
            if isinstance(entry, dict):  # {config: path, set: {dotted key: value}}: a config with overrides
                if set(entry) - {"config", "set"} or not isinstance(entry.get("config"), str) \
                        or not isinstance(entry.get("set", {}), dict):
                    raise ValueError(f"{path}: base entry {mixer!r} is a config path or {{config: path, set: "
                                     f"{{dotted key: value}}}}, got {entry!r}")
                base[mixer] = entry["config"]
                base_sets[mixer] = dict(entry.get("set") or {})
        if "mixer" not in grid:
            raise ValueError(f"{path}: 'base' is a mixer → config map, so 'grid' needs a 'mixer' list")
        missing = [m for m in grid["mixer"] if m not in base]
        if missing:
            raise ValueError(f"{path}: grid mixers {missing} have no config in 'base'")
        configs = list(base.values())
    elif isinstance(base, str):
        if "mixer" in grid:
            raise ValueError(f"{path}: a 'mixer' grid needs 'base' to map each mixer to a config")
        configs = [base]
    else:
        raise ValueError(f"{path}: 'base' is a config path or a map mixer → config path")
    absent = [c for c in configs if not (ROOT / c).is_file()]
    if absent:
        raise FileNotFoundError(f"{path}: base config(s) not found: {absent}")
    fixed = spec.get("fixed") or {}
    both = sorted(set(fixed) & set(grid))
    if both:
        raise ValueError(f"{path}: keys {both} are both fixed and in the grid")
    varied = sorted({k for v in variants.values() for k in v} & (set(fixed) | set(grid)))
    if varied:
        raise ValueError(f"{path}: keys {varied} are set by variants and also fixed or in the grid")
    select = spec.get("select", "val/acc")
    if select not in SELECT:
        raise ValueError(f"{path}: 'select' is one of {sorted(SELECT)}, got {select!r}")
    exclude = spec.get("exclude") or []
    if not isinstance(exclude, list) or any(not isinstance(e, dict) or set(e) - set(grid) for e in exclude):
        raise ValueError(f"{path}: 'exclude' is a list of maps over grid keys {sorted(grid)}")
    return Sweep(name=str(spec.get("name", path.stem)), base=base, grid=grid, fixed=fixed, exclude=exclude,
                 lr_key=spec.get("lr_key", "model.lr"), select=select,
                 project=spec.get("project", "recall-lm"),
                 description=spec.get("description", ""), source=path, variants=variants, base_sets=base_sets)


def cli_value(value) -> str:
    """A value as train.py (jsonargparse) reads it on the command line: scalars plainly, lists and
    maps as JSON (a YAML flow value)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    return json.dumps(value)


def short_key(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def name_part(key: str, value, values: list) -> str:
    """``d_model=64``, ``lr=0.003``; list/map values by their index in the grid (``train_slices=1``)."""
    if isinstance(value, (list, dict)):
        return f"{short_key(key)}={values.index(value)}"
    return f"{short_key(key)}={value:g}" if isinstance(value, float) else f"{short_key(key)}={value}"


def tags(point_values: dict, grid: dict) -> list[str]:
    """W&B tags of a run: the mixer name, then ``key=value`` per other grid key (≤ 64 characters)."""
    out = []
    for key, value in point_values.items():
        out.append(str(value) if key in ("mixer", "variant") else name_part(key, value, grid[key]))
    return [t[:64] for t in out]


def wandb_logger(sweep: Sweep, run_name: str, run_dir: Path, run_tags: list[str]) -> dict:
    return {"class_path": "lightning.pytorch.loggers.WandbLogger",
            "init_args": {"project": sweep.project, "group": sweep.name, "name": run_name, "tags": run_tags,
                          "save_dir": str(run_dir), "job_type": "sweep"}}


def expand(sweep: Sweep, runs_dir: Path | None = None, wandb: bool = True) -> list[Point]:
    """The sweep's points: the Cartesian product of the grid (in the grid's key order, the last key
    varying fastest), minus the excluded ones. Each point's arguments set the base config, the fixed
    keys, the grid keys, its run folder and (``wandb``) a WandbLogger."""
    runs_dir = (RUNS / sweep.name) if runs_dir is None else Path(runs_dir)
    keys = list(sweep.grid)
    points = []
    for combo in itertools.product(*(sweep.grid[k] for k in keys)):
        values = dict(zip(keys, combo))
        if any(all(values[k] == v for k, v in e.items()) for e in sweep.exclude):
            continue
        config = sweep.base[values["mixer"]] if isinstance(sweep.base, dict) else sweep.base
        name = "-".join(str(v) if k in ("mixer", "variant") else name_part(k, v, sweep.grid[k])
                        for k, v in values.items())
        run_dir = runs_dir / name
        args = ["--config", config]
        args += [f"--{k}={cli_value(v)}" for k, v in sweep.fixed.items()]
        args += [f"--{k}={cli_value(v)}" for k, v in sweep.base_sets.get(values.get("mixer"), {}).items()]
        args += [f"--{k}={cli_value(v)}" for k, v in sweep.variants.get(values.get("variant"), {}).items()]
        args += [f"--{k}={cli_value(v)}" for k, v in values.items() if k not in ("mixer", "variant")]
        args += [f"--trainer.default_root_dir={run_dir}"]
        if wandb:
            logger = wandb_logger(sweep, name, run_dir, tags(values, sweep.grid))
            args += [f"--trainer.logger={json.dumps([logger])}"]
        points.append(Point(name, values, config, args))
    names = [p.name for p in points]
    if len(set(names)) != len(names):
        raise ValueError(f"sweep {sweep.name}: grid values give repeated run names {names}")
    return points


def train_runs(points: list[Point], runs_dir: Path) -> list[TrainRun]:
    """Each point as a TrainRun whose result.json (the done marker) and log sit in its run folder."""
    return [TrainRun(p.args, runs_dir / p.name / "result.json", runs_dir / p.name / "train.log",
                     meta={"run": p.name, "point": p.values}) for p in points]


LOCATION_ARGS = ("--trainer.default_root_dir=", "--trainer.logger=")  # where a run writes, not what it trains


def settings_of(args: list[str]) -> list[str]:
    """What decides what a run trains: its train.py arguments without where it wrote its files, under
    today's key names (a run recorded as ``--model.architecture.d_model=64`` is
    ``--model.architecture.d_model=64``)."""
    return [current_key(a.split("=", 1)[0]) + a[len(a.split("=", 1)[0]):] for a in args
            if not a.startswith(LOCATION_ARGS)]


def read_run(path: Path) -> dict:
    """A finished run's result JSON, its point and train_args under today's key names."""
    return _under_todays_keys(json.loads(Path(path).read_text()))


def _under_todays_keys(row: dict) -> dict:
    row = dict(row)
    if isinstance(row.get("point"), dict):
        row["point"] = {current_key(k): v for k, v in row["point"].items()}
    if isinstance(row.get("train_args"), list):
        row["train_args"] = settings_of(row["train_args"])
    return row


def finished_result(run: TrainRun, out_dir: Path) -> Path | None:
    """Where a finished run's result is: its run folder on this machine, else the committed copy in
    ``<out_dir>/runs/<run>.json`` (so a fresh clone trains only what the committed results lack)."""
    committed = Path(out_dir) / "runs" / f"{run.meta['run']}.json"
    return run.result if run.result.exists() else committed if committed.exists() else None


def same_settings(result: Path, run: TrainRun) -> bool:
    """Whether the finished run's recorded train.py arguments are the ones planned now (so skipping it is
    right), ignoring only where it wrote its files."""
    recorded = read_run(result).get("train_args")
    return recorded is not None and recorded == settings_of(run.args)


# ----- results --------------------------------------------------------------------------------------

MQAR_SLICE = re.compile(r"^L(\d+)_kv(\d+)(?:_x(\d+))?$")


def mqar_slice(name: str) -> tuple[int, int, int] | None:
    """``L64_kv16`` → (64, 16, 1), ``L256_kv32_x2`` (the context read twice) → (256, 32, 2); None for
    another probe's slice (``pk_L128_d0.5``, ``sd_A4_B16``)."""
    match = MQAR_SLICE.match(name)
    return None if match is None else (int(match.group(1)), int(match.group(2)), int(match.group(3) or 1))


def slice_order(name: str) -> tuple:
    """Sort key of slice names: MQAR's by length, then kv pairs, then passes; other probes' after them,
    by name."""
    mqar = mqar_slice(name)
    return (0, *mqar, "") if mqar is not None else (1, 0, 0, 0, name)


def slices_of(rows: list[dict]) -> list[str]:
    return sorted({k[len("val/acc/"):] for r in rows for k in r["metrics"] if k.startswith("val/acc/")},
                  key=slice_order)


def model_key(row: dict, lr_key: str) -> tuple:
    """The point without its learning rate: the model whose lr is being chosen."""
    return tuple((k, json.dumps(v, sort_keys=True)) for k, v in row["point"].items() if k != lr_key)


def best_lr(rows: list[dict], lr_key: str = "model.lr", select: str = "val/acc") -> list[dict]:
    """Per model (every grid value but ``lr_key``), the run with the highest final ``val/acc``
    (Zoology's selection), or with ``select="val/loss"`` the lowest final ``val/loss`` (language
    models); ties go to the earlier run. NaN or missing values lose to any number. Each returned row
    gains ``lrs_tried``: how many runs competed."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(model_key(row, lr_key), []).append(row)

    sign = -1.0 if select == "val/loss" else 1.0

    def score(row):
        value = row["metrics"].get(select, float("nan"))
        return -math.inf if math.isnan(value) else sign * value

    best = []
    for group in groups.values():
        top = max(group, key=score)  # max keeps the first of equal scores
        best.append({**top, "lrs_tried": len(group)})
    return best


def _fmt_acc(x) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


RUN_KEYS = {
    "model.architecture.d_model": "d_model",
    "model.lr": "lr",
    "seed_everything": "seed",
}  # in every table


def run_setting(row: dict, key: str):
    """A finished run's value of a dotted train.py key: its grid value, else the last command-line
    override in its recorded ``train_args``, else its config file's value (None if none of them)."""
    if key in row["point"]:
        return row["point"][key]
    for arg in reversed(row.get("train_args", [])):
        if arg.startswith(f"--{key}="):
            return yaml.safe_load(arg.split("=", 1)[1])
    path = ROOT / row["config"] if row.get("config") else None
    value = config_tree(path) if path is not None and path.is_file() else None
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def table(rows: list[dict], sweep: Sweep, extra_cols: tuple = ()) -> tuple[list[str], list[list[str]]]:
    """Header and cells: point values (plus each run's d_model, lr and seed when the grid does not set
    them), params, state (at each test length), accuracies, steps, time."""
    keys = [k for k in sweep.grid if any(k in r["point"] for r in rows)]
    keys += [k for k in RUN_KEYS if k not in keys]
    slices = slices_of(rows)
    lengths = sorted({int(n) for r in rows for n in r.get("state_sizes", {})})
    lm = sweep.select == "val/loss"  # language models: their loss first, its history instead of accuracy's
    history = any(r.get("val_loss_by_step" if lm else "val_acc_by_epoch") for r in rows)
    byte_lengths = sorted({int(n) for r in rows for n in r.get("state_bytes", {})})[-1:]  # the longest test
    header = [
        "run",
        *[RUN_KEYS.get(k, short_key(k)) for k in keys],
        "params",
        *[f"state L={n}" for n in lengths],
        *[f"state bytes L={n}" for n in byte_lengths],
        *(["val/loss"] if lm else []),
        "val/acc",
        *[f"acc {s}" for s in slices],
        *([f"{sweep.select} per validation"] if history else []),
        "steps",
        "time (s)",
        *extra_cols,
    ]
    cells = []
    for r in rows:
        m = r["metrics"]
        point = [run_setting(r, k) for k in keys]
        point = [f"{v:g}" if isinstance(v, float) else (json.dumps(v) if isinstance(v, (list, dict)) else
                                                       "" if v is None else str(v)) for v in point]
        states = [
            f"{r['state_sizes'][str(n)]:,}" if str(n) in r.get("state_sizes", {}) else "" for n in lengths
        ]
        state_bytes = [f"{r['state_bytes'][str(n)]:,}" if str(n) in r.get("state_bytes", {}) else ""
                       for n in byte_lengths]
        per_validation = ([v for _, v in r.get("val_loss_by_step", [])] if lm
                          else r.get("val_acc_by_epoch", []))
        cells.append([r["run"], *point, f"{r['params']:,}", *states, *state_bytes,
                      *([_fmt_acc(m.get("val/loss"))] if lm else []), _fmt_acc(m.get("val/acc")),
                      *[_fmt_acc(m.get(f"val/acc/{s}")) for s in slices],
                      *([" ".join(_fmt_acc(a) for a in per_validation)] if history else []),
                      str(r["steps"]), str(r["seconds"]),
                      *[str(r.get(c, "")) for c in extra_cols]])
    return header, cells


def write_csv(path: Path, header: list[str], cells: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(cells)
    return path


def markdown(header: list[str], cells: list[list[str]], preamble: list[str]) -> str:
    lines = [*preamble, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def write_results(rows: list[dict], sweep: Sweep, out_dir: Path, header_lines: list[str]) -> dict[str, Path]:
    """results.csv/.md (every run, in sweep order), best_lr.csv/.md (one row per model), and each run's
    result JSON as runs/<run>.json (what train_runs recorded, minus the machine-specific run folder). A
    committed record that says the same under today's key names is left as it was written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "runs").mkdir(exist_ok=True)
    for r in rows:
        record = {**r, "train_args": [a for a in r.get("train_args", []) if not a.startswith(LOCATION_ARGS)]}
        path = out_dir / "runs" / f"{r['run']}.json"
        if not (path.exists() and read_run(path) == _under_todays_keys(record)):
            path.write_text(json.dumps(record, indent=1) + "\n")
    settings = [f"Sweep `{sweep.name}`" + (f": {sweep.description}" if sweep.description else ""), "",
                *header_lines]
    head, cells = table(rows, sweep)
    paths = {"results.csv": write_csv(out_dir / "results.csv", head, cells)}
    (out_dir / "results.md").write_text(markdown(head, cells, [f"# {sweep.name}: every run", "", *settings]))
    paths["results.md"] = out_dir / "results.md"
    best = best_lr(rows, sweep.lr_key, sweep.select)
    head, cells = table(best, sweep, extra_cols=("lrs_tried",))
    paths["best_lr.csv"] = write_csv(out_dir / "best_lr.csv", head, cells)
    note = (f"Best `{sweep.lr_key}` per model (every other grid key fixed), chosen by "
            f"{SELECT[sweep.select]}; "
            "`lrs_tried` = runs that competed.")
    (out_dir / "best_lr.md").write_text(
        markdown(head, cells, [f"# {sweep.name}: best learning rate per model", "", *settings, "", note])
    )
    paths["best_lr.md"] = out_dir / "best_lr.md"
    return paths


# ----- main -----------------------------------------------------------------------------------------

def shown(path: Path) -> str:
    """A path relative to the repository when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def load_average() -> str:
    try:
        return " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def check_train_args(points: list[Point]) -> None:
    """Parse, without running, one point per base config and variant with train.py's own parser, so that
    a misspelled key or a bad value stops the sweep before any training rather than failing every run.
    Raises ValueError naming the run and the parser's message."""
    import contextlib
    import io

    from recall_lm.training import cli as train_cli

    checked = set()
    for p in points:
        key = (p.config, p.values.get("variant"))
        if key in checked:
            continue
        checked.add(key)
        err = io.StringIO()
        try:
            with (
                contextlib.chdir(ROOT),
                contextlib.redirect_stdout(io.StringIO()),
                contextlib.redirect_stderr(err),
            ):
                train_cli.main(["fit", *p.args, "--print_config"])  # where the runs start (train_runs.launch)
        except SystemExit as stop:
            if stop.code not in (0, None):
                lines = [line for line in err.getvalue().splitlines() if line.strip()] or [str(stop.code)]
                raise ValueError(
                    f"run {p.name}: train.py refuses its arguments: {lines[-1].strip()}"
                ) from None


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sweep", type=Path, help="a sweep YAML, e.g. configs/sweeps/mqar_cpu.yaml")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at the same time (threads split)")
    parser.add_argument(
        "--dry-run", action="store_true", help="list the runs and their commands, train nothing"
    )
    parser.add_argument(
        "--collect", action="store_true", help="no training: tables and plots from finished runs"
    )
    parser.add_argument("--wandb-yaml", type=Path, help="write the grid as a `wandb sweep` YAML and stop")
    parser.add_argument("--torchrun", type=int, default=0, metavar="N",
                        help="with --wandb-yaml: launch each run with torchrun on N processes")
    parser.add_argument("--runs-dir", type=Path, help="default: runs/sweeps/<name>/")
    parser.add_argument("--out", type=Path, help="tables and plots; default: evals/results/sweeps/<name>/")
    parser.add_argument("--no-wandb", action="store_true", help="CSV logs only (no WandbLogger)")
    parser.add_argument(
        "--first",
        nargs="+",
        default=None,
        metavar="KEY=VALUE",
        help="train the points with these grid values before the others, e.g. --first model.lr=0.003",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be ≥ 1, got {args.jobs}")
    try:
        sweep = load_sweep(args.sweep)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    if args.wandb_yaml and sweep.variants:
        parser.error(f"{args.sweep}: a W&B grid sweeps train.py keys; 'variants' have no W&B equivalent")
    if args.wandb_yaml:
        from recall_lm.evals.sweeps.wandb_sweep import wandb_combinations, wandb_sweep_spec

        spec = wandb_sweep_spec(sweep, args.torchrun)
        args.wandb_yaml.parent.mkdir(parents=True, exist_ok=True)
        args.wandb_yaml.write_text(yaml.safe_dump(spec, sort_keys=False, width=1000))
        if sweep.exclude:
            print(
                f"warning: a W&B grid cannot exclude points; its agents also run the {sweep.exclude} points",
                file=sys.stderr,
            )
        print(f"wrote {args.wandb_yaml}: {len(wandb_combinations(spec))} runs; "
              f"start with `wandb sweep {args.wandb_yaml}` then `wandb agent <id>`")
        return
    runs_dir = args.runs_dir or RUNS / sweep.name
    out_dir = args.out or RESULTS / sweep.name
    points = expand(sweep, runs_dir, wandb=not args.no_wandb)
    runs = train_runs(points, runs_dir)
    found = {r.meta["run"]: finished_result(r, out_dir) for r in runs}
    stale = [
        name for r in runs if (name := r.meta["run"]) and found[name] and not same_settings(found[name], r)
    ]
    if stale:
        sys.exit(
            f"sweep {sweep.name}: finished runs {stale} (in {shown(runs_dir)} or "
            f"{shown(out_dir / 'runs')}) were "
            f"trained with other settings than {shown(sweep.source)} now asks for; delete their results (or "
            "rename the sweep) to train them again"
        )
    busy = [r for r in runs if not found[r.meta["run"]] and is_running(r)]  # another sweep process has them
    todo = [r for r in runs if not found[r.meta["run"]] and r not in busy]
    if args.first:  # points matching every KEY=VALUE first (e.g. one cell of every mixer before the rest)
        wanted = dict(item.split("=", 1) for item in args.first)
        unknown = sorted(set(wanted) - set(sweep.grid))
        if unknown:
            sys.exit(f"--first: {unknown} are not grid keys of {sweep.name} ({sorted(sweep.grid)})")
        matches = lambda r: all(cli_value(r.meta["point"][k]) == v for k, v in wanted.items())  # noqa: E731
        todo = [r for r in todo if matches(r)] + [r for r in todo if not matches(r)]
    print(
        f"sweep {sweep.name}: {len(runs)} runs, {len(runs) - len(todo) - len(busy)} done, "
        f"{len(busy)} running "
        f"elsewhere, {len(todo)} to train ({args.jobs} at a time)",
        flush=True,
    )
    if args.dry_run or not args.collect:  # the points still to train (all for a dry run)
        try:
            check_train_args(points if args.dry_run else [p for p, r in zip(points, runs) if r in todo])
        except ValueError as err:
            sys.exit(f"sweep {sweep.name}: {err}")
    if args.dry_run:
        for p, r in zip(points, runs):
            state = "done" if found[r.meta["run"]] else "running" if r in busy else "todo"
            print(f"[{state}] {p.name}\n    python train.py fit " + shlex.join(p.args))
        return
    start, load_before = time.time(), load_average()
    if todo and not args.collect:
        def report(run, result):
            acc = (
                "FAILED"
                if result is None
                else f"val/acc {result['metrics'].get('val/acc', float('nan')):.3f}"
            )
            print(f"  {run.meta['run']}: {acc} ({'' if result is None else result['seconds']} s)", flush=True)

        run_many(todo, args.jobs, on_done=report)
    wall = time.time() - start
    rows = [{**read_run(path), **run.meta} for run in runs if (path := finished_result(run, out_dir))]
    if not rows:
        sys.exit(f"sweep {sweep.name}: no finished runs in {shown(runs_dir)} or {shown(out_dir / 'runs')}")
    command = "python -m recall_lm.evals.sweeps.sweep " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    header = [
        f"Measured {date.today()} on {machine_line()}; tables written by `{command}`.",
        f"Sweep file: `{shown(sweep.source)}` ({len(runs)} runs; {len(rows)} finished).",
        "Grid: " + "; ".join(f"`{k}` ∈ {v}" for k, v in sweep.grid.items()) + ".",
        "Fixed: "
        + ("; ".join(f"`{k}` = `{cli_value(v)}`" for k, v in sweep.fixed.items()) or "nothing")
        + ".",
    ]
    for name, settings in sweep.variants.items():
        header.append(
            f"Variant `{name}`: "
            + (
                "; ".join(f"`{k}` = `{cli_value(v)}`" for k, v in settings.items())
                or "the base config as it is"
            )
            + "."
        )
    log = (
        out_dir / "invocations.jsonl"
    )  # every training invocation (committed), so --collect still reports them
    if todo and not args.collect:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as fh:
            fh.write(
                json.dumps(
                    {
                        "date": str(date.today()),
                        "command": command,
                        "trained": len(todo),
                        "jobs": args.jobs,
                        "wall_min": round(wall / 60, 1),
                        "load_before": load_before,
                        "load_after": load_average(),
                    }
                )
                + "\n"
            )
    for entry in (json.loads(line) for line in log.read_text().splitlines()) if log.exists() else []:
        header.append(f"Trained {entry['trained']} runs on {entry['date']} with `{entry['command']}` "
                      f"(--jobs {entry['jobs']}): {entry['wall_min']} min of wall time; load average "
                      f"(1/5/15 min) before {entry['load_before']}, after {entry['load_after']}."
                      + (f" {entry['note']}" if entry.get("note") else ""))
    paths = write_results(rows, sweep, out_dir, header)
    from recall_lm.evals.sweeps import plots as sweep_plots

    if sweep.select == "val/acc":  # the recall plots (accuracy vs d_model, state, time)
        paths.update(sweep_plots.plot_all(rows, sweep, out_dir))
    print((out_dir / "best_lr.md").read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    if any(runs_dir.glob("*/wandb/offline-run-*")):
        print(f"W&B: the runs are logged offline (group {sweep.name}); upload them with\n"
              f"  wandb sync {runs_dir}/*/wandb/offline-run-*")
    if len(rows) < len(runs):
        sys.exit(f"{len(runs) - len(rows)} of {len(runs)} runs have no result (failed or not trained)")


if __name__ == "__main__":
    main()
