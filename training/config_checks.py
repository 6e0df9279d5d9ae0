"""Checks of train.py's arguments and config files before the CLI parses them, each ending in one line.

* A config file that is not valid YAML is named with the line and column (the CLI's parser reports
  ``<unicode string>`` instead of the file).
* Renamed keys: the model's ModelConfig was ``model.model`` and is ``model.architecture``; an old key in
  the arguments or a config is refused with its new name (``current_key`` maps recorded settings, e.g. a
  committed sweep run's, to today's names).
* Old class paths: before the code was imported as ``recall_lm.*``, a config named
  ``data.mqar_datamodule.MQARDataModule``, and the Lightning wiring lived in ``models/``. The bare folder
  names are still importable from the repository root as namespace packages, so such a path would load
  a second copy of the modules (a second registry, second classes) instead of failing: it is refused
  with the new path. Checkpoints are checked the same way (``check_tree`` on their hyper-parameters).
"""
from __future__ import annotations

import re
from pathlib import Path

from recall_lm.training.cli import ROOT

FOLDERS = ("kernels", "layers", "models", "data", "evals", "training")  # recall_lm.<folder> is <folder>/
# Modules that moved to another folder: the Lightning wiring left models/ for training/.
MOVED = {"models.lightning_module": "training.task", "models.callbacks": "training.callbacks",
         "models.checkpoint_io": "training.checkpoint_io", "models.csv_logger": "training.csv_logger",
         "models.fsdp": "training.fsdp", "models.resume_checks": "training.resume_checks"}
_DOTTED = re.compile(r"^(recall_lm\.)?((%s)\.[A-Za-z_]\w*)((\.[A-Za-z_]\w*)*(:\w+)?)$" % "|".join(FOLDERS))


# Settings that were renamed: the LanguageModelTask's ModelConfig was ``model.model``
# (``--model.model.d_model``).
RENAMED_KEYS = {"model.model.": "model.architecture."}


def current_key(key: str) -> str:
    """Today's name of a dotted train.py key (``model.model.d_model`` → ``model.architecture.d_model``); a
    leading ``--`` is kept."""
    dashes = "--" if key.startswith("--") else ""
    body = key[len(dashes):]
    for old, new in RENAMED_KEYS.items():
        if body == old.rstrip("."):
            return dashes + new.rstrip(".")
        if body.startswith(old):
            return dashes + new + body[len(old):]
    return key


def upgrade_hparams(hparams: dict) -> dict:
    """A checkpoint's hyper-parameters with today's names (checkpoints before the rename kept the
    ModelConfig under ``model``)."""
    if "model" in hparams and "architecture" not in hparams and isinstance(hparams["model"], dict):
        hparams = {("architecture" if k == "model" else k): v for k, v in hparams.items()}
    return hparams


def _old_keys(tree: object, prefix: str = "") -> list[str]:
    """Renamed keys used in a config tree (nested ``model: {model: ...}`` or dotted ``model.model.x``)."""
    if not isinstance(tree, dict):
        return []
    found = []
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if current_key(dotted) != dotted:
            found.append(dotted)
        else:
            found += _old_keys(value, dotted + ".")
    return found


def new_path(value: object) -> str | None:
    """Where an old dotted path into the project's folders now is: ``recall_lm.<value>`` for a bare folder
    name (``data.mqar_datamodule.MQARDataModule``), the new module for a moved one
    (``models.callbacks.RecallReport`` → ``recall_lm.training.callbacks.RecallReport``); None for anything
    else, current paths included."""
    if not isinstance(value, str):
        return None
    match = _DOTTED.match(value.strip())
    if match is None:
        return None
    prefix, module, rest = match.group(1), match.group(2), match.group(4)
    if module in MOVED:
        return f"recall_lm.{MOVED[module]}{rest}"
    folder, name = module.split(".")
    exists = (ROOT / folder / f"{name}.py").is_file() or (ROOT / folder / name).is_dir()
    return None if prefix or not exists else f"recall_lm.{module}{rest}"


def check_tree(tree: object, where: str) -> None:
    """Raise a ValueError naming the first old path anywhere in ``tree`` (nested dicts and lists)."""
    if isinstance(tree, dict):
        for value in tree.values():
            check_tree(value, where)
    elif isinstance(tree, (list, tuple)):
        for value in tree:
            check_tree(value, where)
    else:
        moved = new_path(tree)
        if moved is not None:
            raise ValueError(f"{where} names {tree}, which is now {moved}")


def config_tree(path: str | Path) -> dict:
    """A config file as the nested dict train.py sees: a ``config: <file>`` it includes first (its path
    relative to this file), then this file's keys over it, dotted ones (``model.architecture.d_model``)
    expanded. Fragments named by a group (``data: _s1.yaml``) are left as paths."""
    import yaml

    path = Path(path)
    tree = yaml.safe_load(path.read_text()) or {}
    base = config_tree(path.parent / tree.pop("config")) if isinstance(tree.get("config"), str) else {}
    for key, value in tree.items():
        *parents, last = key.split(".")
        node = base
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        merge = not parents and isinstance(value, dict) and isinstance(node.get(last), dict)
        node[last] = _merged(node[last], value) if merge else value  # a dotted key sets its value whole
    return base


def _merged(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = (
            _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def config_files(args: list[str]) -> list[str]:
    """The ``--config`` / ``-c`` files among train.py arguments."""
    files = [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("--config", "-c")]
    return files + [a.split("=", 1)[1] for a in args if a.startswith("--config=")]


def check_args(args: list[str]) -> None:
    """Raise a ValueError if a config file is not YAML, or the arguments or a config use an old class path
    or a renamed key."""
    for arg in args:
        check_tree(arg.split("=", 1)[-1], f"the argument {arg}")
        key = arg.split("=", 1)[0]
        if key.startswith("--") and current_key(key) != key:
            raise ValueError(f"the argument {key} is now {current_key(key)}")
    import yaml

    for file in config_files(args):
        path = Path(file)
        try:
            tree = yaml.safe_load(path.read_text()) if path.is_file() else None
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(file)
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise ValueError(f"--config {where}: not valid YAML ({problem})") from None
        check_tree(tree, str(file))
        old = _old_keys(tree)
        if old:
            raise ValueError(f"{file}: {old[0]} is now {current_key(old[0])}")
