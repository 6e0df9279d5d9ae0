"""A sweep's grid as a ``wandb sweep`` YAML, for users who run W&B agents instead of evals/sweeps/sweep.py.

    python -m recall_lm.evals.sweeps.sweep configs/sweeps/mqar_cpu.yaml --wandb-yaml sweep.yaml [--torchrun 8]
    wandb sweep sweep.yaml && wandb agent <entity/project/id>

Method ``grid``; each parameter is a train.py key that the agent passes as ``--key=value`` through
``${args}`` (LightningCLI's syntax). The mixer becomes the ``config`` parameter; the sweep's fixed keys
and a WandbLogger (group = the sweep name) follow ``${args}`` in the command. Runs write to train.py's
default folder (runs/<config path>/) — W&B holds the record; use evals/sweeps/sweep.py for per-run folders.
"""
from __future__ import annotations

import itertools
import json

from recall_lm.evals.sweeps.sweep import Sweep, cli_value


def wandb_sweep_spec(sweep: Sweep, torchrun: int = 0) -> dict:
    """The grid as a ``wandb sweep`` spec (method grid). Its parameters are train.py keys, given as
    ``--key=value`` by ``${args}``; the mixer becomes the ``config`` parameter (its base config), and the
    fixed keys and the WandbLogger follow ``${args}`` in the command. Parameters are sorted by name, so
    ``config`` (which sets everything else first) comes first whether W&B keeps their order or sorts
    them. A W&B grid cannot exclude points: the sweep's ``exclude`` entries are not in the spec (its
    agents would run those points too; main() warns)."""
    params: dict[str, dict] = {}
    for key, values in sweep.grid.items():
        if key == "mixer":
            params["config"] = {"values": [sweep.base[m] for m in values]}
        else:
            params[key] = {
                "values": [v if isinstance(v, (bool, int, float, str)) else cli_value(v) for v in values]
            }
    if isinstance(sweep.base, str):
        params["config"] = {"value": sweep.base}
    early = sorted(k for k in params if k != "config" and k < "config")
    if early:
        raise ValueError(
            f"sweep {sweep.name}: W&B may order keys {early} before --config, which would undo them"
        )
    params = {k: params[k] for k in sorted(params)}
    logger = {"class_path": "lightning.pytorch.loggers.WandbLogger",
              "init_args": {"project": sweep.project, "group": sweep.name, "job_type": "sweep"}}
    tail = [f"--{k}={cli_value(v)}" for k, v in sweep.fixed.items()]
    tail += [f"--trainer.logger={json.dumps([logger])}"]
    if torchrun:
        launcher = ["${env}", "torchrun", f"--nproc_per_node={torchrun}", "${program}"]
        tail += [f"--trainer.devices={torchrun}"]
    else:
        launcher = ["${env}", "${interpreter}", "${program}"]
    return {
        "name": sweep.name,
        "project": sweep.project,
        "program": "train.py",
        "method": "grid",
        "metric": {"name": "val/acc", "goal": "maximize"},
        "parameters": params,
        "command": [*launcher, "fit", "${args}", *tail],
    }


def wandb_command(spec: dict, values: dict) -> list[str]:
    """The command line a W&B agent runs for one parameter combination (``${args}`` expanded as the
    agent does: ``--key=value`` with Python's str of each value); for tests and --dry-run."""
    out = []
    for part in spec["command"]:
        if part == "${args}":
            out += [f"--{k}={v}" for k, v in values.items()]
        elif part in ("${env}", "${interpreter}"):
            out += [] if part == "${env}" else ["python"]
        elif part == "${program}":
            out.append(spec["program"])
        else:
            out.append(part)
    return out


def wandb_combinations(spec: dict) -> list[dict]:
    """Every parameter combination of a grid spec, in its parameter order."""
    keys = list(spec["parameters"])
    choices = [p["values"] if "values" in p else [p["value"]] for p in spec["parameters"].values()]
    return [dict(zip(keys, combo)) for combo in itertools.product(*choices)]
