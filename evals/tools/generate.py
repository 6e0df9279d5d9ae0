"""Sample text from a trained checkpoint: \
``python -m recall_lm.evals.tools.generate --ckpt PATH --prompt "..."``.

For people who want to see what a run learned. The model is rebuilt with
``recall_lm.models.checkpoint.load_model`` (a ``.ckpt`` file or a run folder); the tokenizer is the one the
run was trained with, found by ``recall_lm.data.tokenizers.tokenizer_for_checkpoint`` (``<run>/tokenizer/``),
or the one named by ``--tokenizer`` (e.g. ``byte``). Runs without a saved tokenizer (MQAR) take
token ids instead: ``--prompt-ids "1 2 3"`` prints the generated ids. Generation is
``DecoderLM.generate``: chunked prefill, then one token per step with each mixer's state; it stops
at the tokenizer's end-of-text id (``--eos-id`` for id prompts). ``--temperature 0`` is greedy.

Prints only the continuation (without the prompt and without the end-of-text token).
"""
from __future__ import annotations

import argparse
import sys

import torch

from recall_lm.data.tokenizers import load_tokenizer, tokenizer_for_checkpoint
from recall_lm.models.checkpoint import load_model, resolve_checkpoint


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m recall_lm.evals.tools.generate", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--ckpt",
        required=True,
        help=(
            "a .ckpt file, a run folder (uses checkpoints/last.ckpt), or an exported folder "
            "(recall_lm.models.export)"
        ),
    )
    prompt = p.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="text, encoded with the run's tokenizer (or --tokenizer)")
    prompt.add_argument("--prompt-ids", help='token ids separated by spaces or commas, e.g. "1 2 3"')
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--tokenizer", default=None, help="override the saved tokenizer, e.g. 'byte' or a tokenizer folder"
    )
    p.add_argument(
        "--eos-id", type=int, default=None, help="stop at this id (default: the tokenizer's end-of-text)"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--compile",
        action="store_true",
        help="decode through torch.compile of the single-token step (pays off for long generations)",
    )
    args = p.parse_args(argv)
    if args.max_new_tokens < 0:
        p.error(f"--max-new-tokens must be ≥ 0, got {args.max_new_tokens}")
    if args.temperature < 0:
        p.error(f"--temperature must be ≥ 0, got {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        p.error(f"--top-k must be ≥ 1, got {args.top_k}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        p.error(f"--top-p must be in (0, 1], got {args.top_p}")
    return args


def _parse_ids(text: str) -> list[int]:
    try:
        ids = [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise ValueError(
            f"--prompt-ids must be integers separated by spaces or commas, got {text!r}"
        ) from None
    if not ids:
        raise ValueError("--prompt-ids is empty")
    return ids


def run(args: argparse.Namespace) -> str:
    """Generate as ``args`` says; returns the text (or ids) that ``main`` prints."""
    ckpt = resolve_checkpoint(args.ckpt)
    model, _ = load_model(ckpt, map_location=args.device)
    tokenizer = load_tokenizer(args.tokenizer) if args.tokenizer else tokenizer_for_checkpoint(ckpt)
    vocab = model.config.vocab_size

    if args.prompt is not None:
        if tokenizer is None:
            raise ValueError(
                f"--prompt needs a tokenizer, and none was saved with {ckpt} (looked for tokenizer/ "
                f'next to it and in its parent folder): pass --prompt-ids "1 2 3" or --tokenizer byte'
            )
        ids = tokenizer.encode(args.prompt) or [
            tokenizer.eos_token_id
        ]  # empty prompt: the start of a document
    else:
        ids = _parse_ids(args.prompt_ids)
    if tokenizer is not None and tokenizer.vocab_size > vocab:
        raise ValueError(
            f"tokenizer {tokenizer.name!r} has {tokenizer.vocab_size} ids but the model only {vocab}: "
            "not the tokenizer this checkpoint was trained with"
        )
    bad = [i for i in ids if not 0 <= i < vocab]
    if bad:
        raise ValueError(f"prompt ids {bad[:5]} are outside the model's vocabulary [0, {vocab})")

    eos = (
        args.eos_id
        if args.eos_id is not None
        else (tokenizer.eos_token_id if tokenizer is not None else None)
    )
    prompt = torch.tensor(ids, dtype=torch.long, device=args.device)[None]
    out = model.generate(prompt, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                         top_p=args.top_p, eos_token_id=eos, seed=args.seed, compile=args.compile)[0]
    new = out[len(ids):].tolist()
    if eos is not None and new and new[-1] == eos:
        new = new[:-1]
    if args.prompt is not None:
        return tokenizer.decode(new)
    return " ".join(map(str, new))


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    try:
        text = run(args)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(text)
    return text


if __name__ == "__main__":
    main()
