"""SWDE and FDA, the recall-intensive information-extraction tasks of the BASED paper (Arora et al.,
2024, "Simple linear attention language models balance the recall-throughput tradeoff").

Each row of the public datasets (``hazyresearch/based-swde``, ``hazyresearch/based-fda``, split
``validation``) has a document ``text`` that ends with the attribute asked for (``"<key>:"``), the
attribute name ``key``, and the gold ``value`` (plus ``doc_id`` and ``file_name``). The model reads
the text and must continue it with the value; scoring is "contains" (see evals/probes/recall_tasks_eval.py).

``load_recall_task`` loads them through ``datasets.load_dataset`` (online users; the hub caches
them), or, with ``data_files=``, from local parquet/jsonl files in the same format — which is how
the tests read the offline fixture that ``write_fixture`` writes.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

TASKS = {"swde": "hazyresearch/based-swde", "fda": "hazyresearch/based-fda"}
COLUMNS = ("doc_id", "file_name", "key", "value", "text")


@dataclass
class RecallExample:
    """One question: the document context, the question that ends the prompt, and the gold value."""

    context: str
    question: str
    value: str
    key: str
    doc_id: str = ""


def split_question(text: str, key: str) -> tuple[str, str]:
    """(context, question) of a dataset ``text``: its trailing ``"<key>:"`` (any case) is the question;
    a text without one gets ``"<key>:"`` as its question."""
    stripped = text.rstrip()
    tail = f"{key}:"
    if key and stripped.lower().endswith(tail.lower()):
        cut = len(stripped) - len(tail)
        return stripped[:cut], stripped[cut:]
    return stripped + ("\n" if stripped and not stripped.endswith("\n") else ""), tail


def load_recall_task(task: str, split: str = "validation", data_files: str | list | dict | None = None,
                     limit: int | None = None) -> list[RecallExample]:
    """The examples of ``task`` ('swde' or 'fda'). Without ``data_files``: the public HF dataset.
    With ``data_files`` (a .parquet/.jsonl path, list, or {split: path}): local files, same columns."""
    if task not in TASKS:
        raise ValueError(f"unknown recall task {task!r}; known: {', '.join(TASKS)}")
    from datasets import load_dataset

    if data_files is None:
        dataset = load_dataset(TASKS[task], split=split)
    else:
        files = data_files if isinstance(data_files, dict) else {split: data_files}
        files = {k: [str(f) for f in (v if isinstance(v, (list, tuple)) else [v])] for k, v in files.items()}
        if split not in files:
            raise ValueError(f"data_files has no split {split!r}; it has {sorted(files)}")
        for f in (f for v in files.values() for f in v):
            if not Path(f).is_file():
                raise FileNotFoundError(f"recall task data file not found: {f}")
        builder = "parquet" if files[split][0].endswith(".parquet") else "json"
        dataset = load_dataset(builder, data_files=files, split=split)
    missing = {"key", "value", "text"} - set(dataset.column_names)
    if missing:
        raise ValueError(
            f"recall task {task!r} data lacks column(s) {sorted(missing)}; has {dataset.column_names}"
        )
    examples, empty = [], 0
    for row in dataset:
        if limit is not None and len(examples) >= limit:
            break
        value = str(row["value"]).strip()
        if not value:  # "contains" would score an empty answer as recalled whatever the model says
            empty += 1
            continue
        context, question = split_question(row["text"], row["key"])
        examples.append(RecallExample(context, question, value, row["key"], str(row.get("doc_id", ""))))
    if empty:
        warnings.warn(
            f"recall task {task!r}: left out {empty} row(s) with an empty value (nothing to recall)"
        )
    return examples


FIXTURE_DOCS = {
    "swde": [
        ("movie-0001", {"title": "The Quiet Harbour", "director": "Maria Okafor", "year": "1987",
                        "genre": "Drama"}),
        ("movie-0002", {"title": "Sixteen Lanterns", "director": "Tomas Lind", "year": "2004",
                        "genre": "Comedy"}),
        ("university-0003", {"name": "Northfield Institute", "phone": "555-0142", "type": "Public"}),
    ],
    "fda": [
        ("K123456", {"device name": "CardioTrack Monitor", "applicant": "Helix Medical Inc.",
                     "product code": "DRT", "predicate device": "K099871"}),
        ("K654321", {"device name": "OsteoFix Screw System", "applicant": "Bonewell Ltd",
                     "product code": "HWC", "predicate device": "K111222"}),
    ],
}


def _fixture_text(task: str, doc_id: str, attributes: dict, key: str) -> str:
    """A document in the style of the task (HTML-ish page for SWDE, 510(k) summary for FDA) whose
    text ends with the question ``<key>:``."""
    if task == "swde":
        lines = [f"{doc_id} | details page", "home | search | browse"]
        lines += [f"{k.title()}: {v}" for k, v in attributes.items()]
        lines += ["copyright notice | privacy | contact us"]
    else:
        lines = [f"510(k) SUMMARY {doc_id}", "This summary is submitted in accordance with 21 CFR 807.92."]
        lines += [f"The {k} is {v}." for k, v in attributes.items()]
        lines += ["Conclusion: the device is substantially equivalent to the predicate."]
    return "\n".join(lines) + f"\n{key}:"


def write_fixture(directory: str | Path, fmt: str = "parquet") -> dict[str, Path]:
    """Write small SWDE- and FDA-format files (columns doc_id, file_name, key, value, text; one row per
    document × attribute) into ``directory``; returns {task: path}. ``fmt``: 'parquet' or 'jsonl'."""
    if fmt not in ("parquet", "jsonl"):
        raise ValueError(f"fixture fmt must be 'parquet' or 'jsonl', got {fmt!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for task, docs in FIXTURE_DOCS.items():
        rows = [{"doc_id": doc_id, "file_name": f"{doc_id}.txt", "key": key, "value": value,
                 "text": _fixture_text(task, doc_id, attributes, key)}
                for doc_id, attributes in docs for key, value in attributes.items()]
        path = directory / f"{task}_validation.{fmt}"
        if fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(rows), path)
        else:
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        paths[task] = path
    return paths
