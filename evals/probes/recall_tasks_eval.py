"""SWDE / FDA evaluation of a checkpoint: truncated prompt, greedy generation, the "contains" metric.

    python -m recall_lm.evals.probes.recall_tasks_eval --ckpt runs/lm/based-tiny --task swde --limit 200
    python -m recall_lm.evals.probes.recall_tasks_eval --ckpt runs/lm/based-tiny --task fda --jrt \\
        --context-len 1024
    # local copy
    python -m recall_lm.evals.probes.recall_tasks_eval --ckpt RUN --task swde --data-files my_swde.parquet

As in the BASED paper's harness (lm-evaluation-harness ``generate_until`` with ``max_length``):
the prompt (document then ``"<key>:"``) is cut from the left to ``context_len − max_new_tokens``
tokens, so the question at the end is always kept; the model decodes greedily up to
``max_new_tokens`` (BASED: 48) tokens, the continuation is cut at its first newline, and the
example scores 1 when the gold value occurs in it, case-insensitively ("contains"). The score is
the mean over examples. ``--jrt`` builds JRT prompts (Arora et al., 2024, "Just read twice"):
the document twice, then the question, each copy cut to half the budget (its end kept).
Tokenizer: the one saved with the run (``recall_lm.data.tokenizers.tokenizer_for_checkpoint``) or
``--tokenizer SPEC``. Writes per-example ``<out>.csv`` and a summary ``<out>.md``.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch

from recall_lm.data.recall_tasks import RecallExample, load_recall_task
from recall_lm.evals.common import ROOT
from recall_lm.evals.probes.report import add_checkpoint_argument, load_checkpoint_model, run_name, write_rows

COLUMNS = ["doc_id", "key", "value", "prediction", "correct", "prompt_tokens"]


def contains(prediction: str, gold: str) -> bool:
    """The BASED "contains" metric: ``gold`` occurs in ``prediction``, ignoring case."""
    return re.search(re.escape(gold), prediction, flags=re.IGNORECASE) is not None


def resolve_tokenizer(ckpt, spec: str | None, vocab_size: int):
    """The tokenizer of ``--tokenizer spec``, else the one saved with the checkpoint's run."""
    from recall_lm.data.tokenizers import load_tokenizer, tokenizer_for_checkpoint

    tokenizer = load_tokenizer(spec) if spec else tokenizer_for_checkpoint(ckpt)
    if tokenizer is None:
        raise ValueError(f"checkpoint {ckpt} has no saved tokenizer (no tokenizer/ folder beside its run): "
                         f"text probes need one; pass --tokenizer SPEC (e.g. --tokenizer byte)")
    if tokenizer.vocab_size > vocab_size:
        raise ValueError(f"tokenizer {tokenizer.name!r} has {tokenizer.vocab_size} ids but the model only "
                         f"{vocab_size}: not the model's tokenizer")
    return tokenizer


def build_prompt(tokenizer, example: RecallExample, context_len: int, max_new_tokens: int,
                 jrt: bool = False) -> list[int]:
    """Token ids of the (possibly JRT) prompt, at most ``context_len − max_new_tokens`` long, ending
    with the question; the document is cut from its start (its end, next to the question, is kept)."""
    question = tokenizer.encode(example.question)
    budget = context_len - max_new_tokens - len(question)
    separator = tokenizer.encode("\n") if jrt else []
    room = (budget - len(separator)) // 2 if jrt else budget
    if room < 1:
        raise ValueError(
            f"context_len={context_len} leaves no room for the document after {max_new_tokens} new "
            f"tokens and a {len(question)}-token question"
        )
    context = tokenizer.encode(example.context)
    kept = context[max(0, len(context) - room):]
    return kept + separator + kept + question if jrt else kept + question


@torch.no_grad()
def generate_answers(
    model, tokenizer, prompts: list[list[int]], max_new_tokens: int, batch_size: int = 8
) -> list[str]:
    """Greedy continuations of ``prompts`` (ragged id lists), decoded and cut at the first newline."""
    answers = []
    for start in range(0, len(prompts), batch_size):
        batch = [torch.tensor(p, dtype=torch.long) for p in prompts[start : start + batch_size]]
        outs = model.generate(batch, max_new_tokens, temperature=0.0, eos_token_id=tokenizer.eos_token_id)
        for prompt, out in zip(batch, outs):
            text = tokenizer.decode(out[prompt.numel():].tolist())
            answers.append(text.split("\n", 1)[0].strip())
    return answers


def evaluate_recall(
    model,
    tokenizer,
    examples: list[RecallExample],
    context_len: int = 1024,
    max_new_tokens: int = 48,
    jrt: bool = False,
    batch_size: int = 8,
) -> tuple[float, list[dict]]:
    """(mean contains score, per-example rows) of ``model`` on ``examples``."""
    if not examples:
        raise ValueError("no examples to evaluate")
    prompts = [build_prompt(tokenizer, e, context_len, max_new_tokens, jrt) for e in examples]
    answers = generate_answers(model, tokenizer, prompts, max_new_tokens, batch_size)
    rows = [
        {
            "doc_id": e.doc_id,
            "key": e.key,
            "value": e.value,
            "prediction": a,
            "correct": int(contains(a, e.value)),
            "prompt_tokens": len(p),
        }
        for e, a, p in zip(examples, answers, prompts)
    ]
    return sum(r["correct"] for r in rows) / len(rows), rows


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_checkpoint_argument(parser)
    parser.add_argument("--task", required=True, choices=["swde", "fda"])
    parser.add_argument("--context-len", type=int, default=1024, help="prompt + generation tokens at most")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--limit", type=int, help="evaluate the first N examples only")
    parser.add_argument(
        "--jrt", action="store_true", help="JRT prompts: the document twice, then the question"
    )
    parser.add_argument("--tokenizer", help="tokenizer spec (default: the one saved with the run)")
    parser.add_argument("--data-files", nargs="+", help="local parquet/jsonl files in the dataset's format")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--out", type=Path, help="output stem (default evals/results/probes/<task>[_jrt]_<run>)"
    )
    args = parser.parse_args(argv)
    for name in ("context_len", "max_new_tokens", "batch_size") + (
        ("limit",) if args.limit is not None else ()
    ):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be ≥ 1, got {getattr(args, name)}")
    try:
        model, _ = load_checkpoint_model(args.ckpt, args.device)
        tokenizer = resolve_tokenizer(args.ckpt, args.tokenizer, model.config.vocab_size)
        examples = load_recall_task(args.task, args.split, args.data_files, args.limit)
        score, rows = evaluate_recall(
            model, tokenizer, examples, args.context_len, args.max_new_tokens, args.jrt, args.batch_size
        )
    except (ValueError, FileNotFoundError, ConnectionError) as error:  # ConnectionError: the hub, offline
        raise SystemExit(f"error: {str(error).splitlines()[0]}") from None
    name = run_name(args.ckpt)
    out = (
        args.out or ROOT / "evals" / "results" / "probes" / f"{args.task}{'_jrt' if args.jrt else ''}_{name}"
    )
    title = (
        f"{args.task.upper()} contains = {score:.4f} over {len(rows)} examples "
        f"(context_len {args.context_len}, max_new_tokens {args.max_new_tokens}, jrt {args.jrt}) of "
        f"`{args.ckpt}`; command: `python -m recall_lm.evals.probes.recall_tasks_eval "
        f"{' '.join(sys.argv[1:] if argv is None else argv)}`"
    )
    write_rows(rows, COLUMNS, out, title)
    print(title)
    return score


if __name__ == "__main__":
    main()
