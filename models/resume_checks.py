"""Checks train.py makes before a run touches a run folder: that a resume trains the model its
checkpoint holds, and that a fresh run does not mix its checkpoints with an earlier run's."""
from __future__ import annotations

import json
from pathlib import Path


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
    saved = _flatten(dict(checkpoint_hparams), "model")
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
