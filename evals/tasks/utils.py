"""Prompt and metric functions of the shipped lm-eval tasks (``!function utils.<name>`` in the YAMLs).

Importing this module (lm-eval does, for ``--include_path evals/tasks``) puts the repository on
``sys.path`` and imports ``evals.harness``, which registers the ``recall-lm`` model: that is what lets
``lm_eval --model recall-lm --include_path evals/tasks ...`` run from the plain lm-eval command.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import evals.harness  # noqa: E402,F401  (registers recall-lm)
from data.recall_tasks import split_question  # noqa: E402
from evals.recall_tasks import contains  # noqa: E402


def recall_text(doc) -> str:
    """The document, ending with the question ``"<key>:"`` (BASED's SWDE / FDA prompt)."""
    context, question = split_question(doc["text"], doc["key"])
    return context + question


def recall_text_jrt(doc) -> str:
    """JRT (Arora et al., 2024, "Just read twice"): the document, a newline, the document again, the question."""
    context, question = split_question(doc["text"], doc["key"])
    return context + "\n" + context + question


def recall_target(doc) -> str:
    return str(doc["value"]).strip()


def process_contains(doc, results) -> dict:
    """The "contains" metric: the gold value occurs in the continuation (cut at the newline), any case."""
    return {"contains": float(contains(results[0], recall_target(doc)))}
