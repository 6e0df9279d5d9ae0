"""The default corpus: the Python standard library's own ``.py`` sources, present on every machine.

``python-stdlib`` lets ``configs/lm/tiny.yaml`` train a real language model with no download. The
files under ``sysconfig.get_paths()["stdlib"]`` are read in sorted order of their relative paths,
skipping ``site-packages``, the test suites (``test``, ``tests``, ``idle_test``) and ``idlelib``
(about 780 files, 12.5 MB on CPython 3.11). A file is held out for validation when the SHA-256 of
its relative path falls in the lowest ``VAL_PERCENT`` percent: a fixed split that does not move
when a Python release adds or removes other files. Both parts are written once, atomically, as
JSON lines (``{"path", "text"}``) to ``<cache>/corpus/python-stdlib-<version>-<hash>/``.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import sysconfig
from pathlib import Path

NAME = "python-stdlib"
VAL_PERCENT = 2
SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "idlelib", "__pycache__"}


def default_cache_dir() -> Path:
    """``$RECALL_LM_CACHE`` or ``~/.cache/recall-lm``."""
    return Path(os.environ.get("RECALL_LM_CACHE", Path.home() / ".cache" / "recall-lm")).expanduser()


def stdlib_files(root: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """(relative path, path) of the stdlib's .py files, sorted by relative path."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in filenames:
            if name.endswith(".py"):
                path = Path(dirpath) / name
                found.append((path.relative_to(root).as_posix(), path))
    return sorted(found)


def is_validation(relative_path: str) -> bool:
    return int(hashlib.sha256(relative_path.encode()).hexdigest(), 16) % 100 < VAL_PERCENT


def build_stdlib_corpus(
    cache_dir: str | os.PathLike | None = None, root: str | os.PathLike | None = None
) -> dict[str, Path]:
    """Write (once) and return ``{"train": <train.jsonl>, "val": <val.jsonl>}`` for the stdlib corpus."""
    files = stdlib_files(root)
    if not files:
        raise FileNotFoundError(
            f"no .py files under the standard library folder {root or sysconfig.get_paths()['stdlib']}"
        )
    listing = hashlib.sha256(json.dumps([(rel, p.stat().st_size) for rel, p in files]).encode()).hexdigest()[
        :12
    ]
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    folder = Path(cache_dir or default_cache_dir()) / "corpus" / f"{NAME}-{version}-{listing}"
    out = {"train": folder / "train.jsonl", "val": folder / "val.jsonl"}
    if all(p.is_file() for p in out.values()):
        return out
    folder.mkdir(parents=True, exist_ok=True)
    tmp = {k: p.with_name(f".{p.name}.{os.getpid()}.tmp") for k, p in out.items()}
    with open(tmp["train"], "w", encoding="utf-8") as train, open(tmp["val"], "w", encoding="utf-8") as val:
        for rel, path in files:
            text = path.read_text(encoding="utf-8", errors="replace")
            if text.strip():
                (val if is_validation(rel) else train).write(json.dumps({"path": rel, "text": text}) + "\n")
    for key in out:
        os.replace(tmp[key], out[key])
    return out
