"""Old class paths in configs and checkpoints: before the code was imported as ``recall_lm.*``, a config
named ``data.mqar_datamodule.MQARDataModule``. The bare folder names are still importable from the
repository root as namespace packages, so such a path would load a second copy of the modules (a second
registry, second classes) instead of failing. ``train.py`` refuses it first, in one line naming the new path.
"""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("kernels", "layers", "models", "data", "evals", "training")  # recall_lm.<folder> is <folder>/
_DOTTED = re.compile(r"^(%s)\.([A-Za-z_]\w*)(\.[A-Za-z_]\w*)*(:\w+)?$" % "|".join(FOLDERS))


def new_path(value: object) -> str | None:
    """``recall_lm.<value>`` when ``value`` is a dotted path into one of the project's folders by its old
    bare name (``data.mqar_datamodule.MQARDataModule``, ``recall_lm.evals.harness:RecallLM``), else None."""
    if not isinstance(value, str):
        return None
    match = _DOTTED.match(value.strip())
    if match is None:
        return None
    folder, module = match.group(1), match.group(2)
    if not ((ROOT / folder / f"{module}.py").is_file() or (ROOT / folder / module).is_dir()):
        return None
    return "recall_lm." + value.strip()


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
            raise ValueError(f"{where} names {tree}, which is now {moved} (the code is imported as recall_lm.*)")


def config_files(args: list[str]) -> list[str]:
    """The ``--config`` / ``-c`` files among train.py arguments."""
    files = [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("--config", "-c")]
    return files + [a.split("=", 1)[1] for a in args if a.startswith("--config=")]


def check_args(args: list[str]) -> None:
    """Raise a ValueError if train.py arguments, or a config file they name, use an old class path."""
    for arg in args:
        check_tree(arg.split("=", 1)[-1], f"the argument {arg}")
    import yaml

    for file in config_files(args):
        path = Path(file)
        try:
            tree = yaml.safe_load(path.read_text()) if path.is_file() else None
        except yaml.YAMLError:
            continue  # the CLI's parser reports it
        check_tree(tree, str(file))
