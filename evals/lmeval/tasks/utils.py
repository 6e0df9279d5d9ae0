"""Prompt and metric functions of the shipped lm-eval tasks (``!function utils.<name>`` in the YAMLs).

lm-eval imports this file by its path (``--include_path evals/lmeval/tasks``); the project's code comes from
the installed ``recall_lm`` package (``make install``).
"""
from recall_lm.data.recall_tasks import split_question
from recall_lm.evals.probes.recall_tasks_eval import contains


def recall_text(doc) -> str:
    """The document, ending with the question ``"<key>:"`` (BASED's SWDE / FDA prompt)."""
    context, question = split_question(doc["text"], doc["key"])
    return context + question


def recall_text_jrt(doc) -> str:
    """JRT (Arora et al., 2024, "Just read twice"): the document, a newline, the document again, the
    question."""
    context, question = split_question(doc["text"], doc["key"])
    return context + "\n" + context + question


def recall_target(doc) -> str:
    return str(doc["value"]).strip()


def process_contains(doc, results) -> dict:
    """The "contains" metric: the gold value occurs in the continuation (cut at the newline), any case."""
    return {"contains": float(contains(results[0], recall_target(doc)))}
