"""Where text comes from: local files (text, JSON lines, parquet; globs and folders) or an HF hub dataset.

Everything is read with HF ``datasets`` (its loaders cache the parsed files as Arrow on disk) and
returned as a ``datasets.Dataset`` (or ``IterableDataset`` when streaming) with one column ``text``,
one row per document. A text file is one document; a JSON-lines or parquet row is one document.
Every failure names what failed: a missing file or glob, an unknown format, a missing column, an
empty corpus.
"""
from __future__ import annotations

import codecs
import glob
import hashlib
import json
from pathlib import Path

TEXT_SUFFIXES = (".txt", ".text", ".md", ".rst", ".py")
JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
FORMATS = ("text", "json", "parquet")


def as_list(sources) -> list[str]:
    if sources is None:
        return []
    if isinstance(sources, (str, Path)):
        return [str(sources)]
    return [str(s) for s in sources]


def file_format(path: Path, format: str = "auto") -> str:
    """'text', 'json' or 'parquet' from ``format`` or else the file suffix; unknown → ValueError naming
    the file."""
    if format != "auto":
        if format not in FORMATS:
            raise ValueError(f"unknown format {format!r}; expected 'auto' or one of {FORMATS}")
        return format
    suffix = path.suffix.lower()
    for name, suffixes in (("text", TEXT_SUFFIXES), ("json", JSON_SUFFIXES), ("parquet", PARQUET_SUFFIXES)):
        if suffix in suffixes:
            return name
    raise ValueError(
        f"unknown format of {path} (suffix {suffix!r}): text files end in {TEXT_SUFFIXES}, JSON lines "
        f"in {JSON_SUFFIXES}, parquet in {PARQUET_SUFFIXES}; or set format: text|json|parquet"
    )


def resolve_files(sources, what: str = "sources", format: str = "auto") -> list[Path]:
    """Expand files, folders (recursively: files with a known suffix) and glob patterns, in sorted order.

    A source that matches nothing raises FileNotFoundError naming it; so does an empty list.
    """
    files: list[Path] = []
    entries = as_list(sources)
    if not entries:
        raise FileNotFoundError(f"{what}: no source given")
    for entry in entries:
        path = Path(entry).expanduser()
        if any(c in entry for c in "*?["):
            matched = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
            if not matched:
                raise FileNotFoundError(f"{what}: the pattern {entry!r} matches no file")
            files += matched
        elif path.is_dir():
            known = TEXT_SUFFIXES + JSON_SUFFIXES + PARQUET_SUFFIXES
            matched = sorted(
                p for p in path.rglob("*") if p.is_file() and (format != "auto" or p.suffix.lower() in known)
            )
            if not matched:
                raise FileNotFoundError(
                    f"{what}: the folder {entry!r} holds no text, JSON-lines or parquet file"
                )
            files += matched
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{what}: file not found: {entry}")
    for f in files:
        file_format(f, format)  # fail early on an unknown suffix
    return files


def files_fingerprint(files: list[Path]) -> str:
    """Changes when a file is added, removed, resized or touched."""
    stats = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:16]


def is_utf8(path: Path) -> bool:
    """Whether the whole file decodes as UTF-8 (read in 16 MiB pieces)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with open(path, "rb") as fh:
            for piece in iter(lambda: fh.read(1 << 24), b""):
                decoder.decode(piece)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def first_unreadable_line(path: Path, fmt: str) -> str | None:
    """``"<file>:<line>: <why>"`` for the first line of ``path`` that is not UTF-8 or, in a JSON-lines file,
    not JSON; None if every line reads (datasets' own errors name neither the file nor the line)."""
    json_lines = fmt == "json" and not path.read_bytes()[:64].lstrip().startswith(b"[")
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                return f"{path}:{number}: not UTF-8 ({error.reason} at byte {error.start} of the line)"
            if json_lines and line.strip():
                try:
                    json.loads(line)
                except json.JSONDecodeError as error:
                    return f"{path}:{number}: not JSON ({error.msg} at column {error.colno})"
    return None


def load_local(
    files: list[Path], text_column: str = "text", format: str = "auto", cache_dir: str | None = None
):
    """Read ``files`` into one ``datasets.Dataset`` with a single ``text`` column (text, then JSON, then
    parquet files, each group in the given order). Raises ValueError naming the files on a missing column
    or no documents."""
    import datasets

    groups: dict[str, list[str]] = {}
    for f in files:
        groups.setdefault(file_format(f, format), []).append(str(f))
    parts = []
    for fmt in FORMATS:
        if fmt not in groups:
            continue
        names = groups[fmt]
        nonempty = [n for n in names if Path(n).stat().st_size > 0]
        if not nonempty:
            continue
        kwargs = {"sample_by": "document", "keep_linebreaks": True} if fmt == "text" else {}
        for name in nonempty:  # pyarrow reads bad bytes without a word and fails later, far from the file
            if fmt in ("text", "json") and not is_utf8(Path(name)):
                raise ValueError(
                    f"cannot read {fmt} files {_short(nonempty)}: {first_unreadable_line(Path(name), fmt)}"
                )
        try:
            part = datasets.load_dataset(
                fmt, data_files=nonempty, split="train", cache_dir=cache_dir, **kwargs
            )
        except Exception as error:
            where = next(filter(None, (first_unreadable_line(Path(n), fmt) for n in nonempty)), None)
            reason = (
                where
                or f"{type(error).__name__}: "
                f"{str(error).strip().splitlines()[0] if str(error).strip() else ''}"
            )
            raise ValueError(f"cannot read {fmt} files {_short(nonempty)}: {reason}") from None
        column = "text" if fmt == "text" else text_column
        if column not in part.column_names:
            raise ValueError(
                f"text_column {column!r} not found in {_short(nonempty)}; columns: {part.column_names}"
            )
        part = part.select_columns([column])
        if column != "text":
            part = part.rename_column(column, "text")
        if not isinstance(part.features["text"], datasets.Value) or part.features["text"].dtype not in (
            "string",
            "large_string",
        ):
            raise ValueError(
                f"text_column {column!r} of {_short(nonempty)} is not a string column: "
                f"{part.features['text']}"
            )
        parts.append(part)
    if not parts or sum(len(p) for p in parts) == 0:
        raise ValueError(f"empty corpus: no documents in {_short([str(f) for f in files])}")
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def load_hub(path: str, name: str | None, split: str, text_column: str = "text", streaming: bool = False,
             cache_dir: str | None = None, revision: str | None = None):
    """An HF hub dataset reduced to its ``text`` column; offline or unknown → ValueError naming it."""
    import datasets

    where = f"hub dataset {path!r}" + (f" (config {name!r})" if name else "") + f" split {split!r}"
    try:
        ds = datasets.load_dataset(
            path, name, split=split, streaming=streaming, cache_dir=cache_dir, revision=revision
        )
    except Exception as error:
        raise ValueError(f"cannot load {where}: {type(error).__name__}: {str(error)[:300]}") from None
    columns = ds.column_names if ds.column_names is not None else list((ds.features or {}).keys())
    if columns and text_column not in columns:
        raise ValueError(f"text_column {text_column!r} not found in {where}; columns: {columns}")
    if columns:
        ds = ds.select_columns([text_column])
    if text_column != "text":
        ds = ds.rename_column(text_column, "text")
    return ds


def _short(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")
