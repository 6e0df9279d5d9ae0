"""Checks train.py makes before a run touches a run folder: that a resume trains the model its
checkpoint holds, and that a fresh run does not mix its checkpoints with an earlier run's."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch


def _flatten(tree, prefix: str) -> dict[str, str]:
    """Dotted keys → JSON text of the leaves (tuples as lists, so YAML lists and saved tuples compare)."""
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            if not str(key).startswith("_"):  # Lightning's _instantiator, _class_path
                out.update(_flatten(value, f"{prefix}.{key}"))
        return out
    return {prefix: json.dumps(tree, sort_keys=True, default=str)}


def config_changes(checkpoint_hparams: dict, run_model_config: dict) -> list[str]:
    """The model settings (``model.*`` keys of train.py) a run sets differently from the checkpoint it
    resumes, as ``"model.lr=0.5 (checkpoint: 0.003)"``. Keys the checkpoint does not know (options added
    since it was written) are left out."""
    from recall_lm.training.config_checks import upgrade_hparams

    saved = _flatten(upgrade_hparams(dict(checkpoint_hparams)), "model")
    wanted = _flatten(dict(run_model_config), "model")
    return [f"{key}={json.loads(wanted[key])} (checkpoint: {json.loads(saved[key])})"
            for key in sorted(wanted) if key in saved and wanted[key] != saved[key]]


def existing_checkpoints(root: str | Path) -> list[Path]:
    """The checkpoints (files or sharded folders) an earlier run left in ``<root>/checkpoints``."""
    folder = Path(root) / "checkpoints"
    return sorted(folder.glob("*.ckpt")) if folder.is_dir() else []


def last_checkpoint(root: str | Path) -> Path | None:
    """What ``--ckpt_path last`` resumes: the newest ``last*.ckpt`` in ``<root>/checkpoints``."""
    candidates = [p for p in existing_checkpoints(root) if p.name.startswith("last")]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def check_run_folder(root: str, ckpt_path: str | None, model_config: dict) -> None:
    """Raise a ValueError when a fit would mix runs: a fresh run into a folder that holds an earlier
    run's checkpoints (whose ``last.ckpt`` evals would keep reading), or a resume whose model settings
    differ from its checkpoint's (the checkpoint's model, optimiser and schedule are what continue)."""
    if ckpt_path is None:
        if existing_checkpoints(root):
            raise ValueError(f"{root}/checkpoints already holds an earlier run's checkpoints: resume it with "
                             "--ckpt_path last, or train into another --trainer.default_root_dir")
        return
    path = (
        last_checkpoint(root)
        if ckpt_path == "last"
        else Path(ckpt_path)
        if Path(ckpt_path).exists()
        else None
    )
    if path is None:
        if ckpt_path == "last":  # (a restartable job's first start): say so instead of Lightning's hint
            print(
                f"--ckpt_path last: no checkpoint in {root}/checkpoints yet, so this run starts from step 0",
                file=sys.stderr,
            )
        return
    saved = path / "meta.pt" if path.is_dir() else path  # a sharded checkpoint keeps its hparams in meta.pt
    if not saved.is_file():
        return
    hparams = (
        torch.load(saved, map_location="cpu", weights_only=True, mmap=True).get("hyper_parameters") or {}
    )
    changes = config_changes(hparams, model_config)
    if changes:
        raise ValueError(
            f"--ckpt_path {ckpt_path} resumes {path}, trained with other model settings than this "
            f"run's: {'; '.join(changes)}. A resume continues the checkpoint's model, optimiser and "
            "schedule: drop these overrides, or start a new run in another folder"
        )
