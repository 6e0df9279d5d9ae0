"""Passkey retrieval accuracy of a checkpoint over a (length × depth) grid, as a heat map.

    python -m recall_lm.evals.probes.passkey_eval --ckpt runs/probes/passkey --lengths 64 128 256 \\
        --depths 0 0.25 0.5 0.75 1
    python -m recall_lm.evals.probes.passkey_eval --ckpt runs/lm/based-tiny --mode text --lengths 256 512 1024

``--mode token`` (models trained on data/passkey.py's token task, e.g. configs/probes/passkey.yaml):
the key tokens are read teacher-forced, and an example counts as right when the argmax at every
answer position is its key token (``token_accuracy``: the fraction of key tokens right).
``--mode text`` (language models with a tokenizer): the Mohtashami & Jaggi (2023) prompt built to
about L tokens with a random 5-digit pass key; right when the greedy continuation
(``model.generate``, ``--max-new-tokens``) contains the number. Writes ``<out>.csv/.md/.png``;
default out: evals/results/probes/passkey_<mode>_<run name>.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from recall_lm.data.passkey import passkey_text_prompt, passkey_tokens
from recall_lm.evals.common import ROOT
from recall_lm.evals.probes.report import (
    add_checkpoint_argument,
    load_checkpoint_model,
    run_name,
    write_report,
)

COLUMNS = ["length", "depth", "accuracy", "token_accuracy", "num_examples", "status"]


@torch.no_grad()
def token_passkey_scores(
    model, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int = 64
) -> tuple[float, float]:
    """(exact-match accuracy, key-token accuracy) of teacher-forced argmax on inputs/labels [N, L]."""
    device = next(model.parameters()).device
    exact, tokens = [], []
    for start in range(0, inputs.shape[0], batch_size):
        x, y = inputs[start : start + batch_size].to(device), labels[start : start + batch_size].to(device)
        mask = y != -100
        right = (model(x).logits.argmax(-1) == y) & mask
        per_example = right.sum(-1).float() / mask.sum(-1).clamp(min=1).float()
        tokens.append(per_example.cpu())
        exact.append((per_example == 1.0).float().cpu())
    return torch.cat(exact).mean().item(), torch.cat(tokens).mean().item()


def evaluate_token_grid(
    model,
    lengths: list[int],
    depths: list[float],
    num_examples: int = 200,
    key_len: int = 4,
    filler: str = "random",
    batch_size: int = 64,
    seed: int = 1_000_003,
) -> list[dict]:
    """One row per (length, depth) of the token task; infeasible cells get NaN and the reason."""
    vocab_size = model.config.vocab_size
    rows = []
    for i, L in enumerate(lengths):
        for j, depth in enumerate(depths):
            row = {"length": L, "depth": depth, "num_examples": num_examples}
            try:
                inputs, labels = passkey_tokens(
                    vocab_size, num_examples, L, depth, key_len, filler, seed + 1000 * i + j
                )
            except ValueError as error:
                rows.append(
                    {
                        **row,
                        "accuracy": float("nan"),
                        "token_accuracy": float("nan"),
                        "num_examples": 0,
                        "status": f"infeasible: {error}",
                    }
                )
                continue
            exact, token = token_passkey_scores(model, inputs, labels, batch_size)
            rows.append({**row, "accuracy": exact, "token_accuracy": token, "status": "ok"})
    return rows


def evaluate_text_grid(model, tokenizer, lengths: list[int], depths: list[float], num_examples: int = 20,
                       max_new_tokens: int = 12, batch_size: int = 8, seed: int = 0) -> list[dict]:
    """One row per (length, depth) of the text task: the fraction of greedy continuations that contain
    the pass key. ``length`` is the prompt's target size in tokens; a length shorter than the intro,
    the key sentence, one filler sentence and the question together is infeasible (NaN and the reason)."""
    rng = np.random.default_rng(seed)
    rows = []
    for L in lengths:
        for depth in depths:
            keys = rng.integers(10_000, 100_000, size=num_examples).tolist()
            prompts = [torch.tensor(passkey_text_prompt(tokenizer, L, depth, k)) for k in keys]
            longest = max(p.numel() for p in prompts)
            if longest > L:
                rows.append(
                    {
                        "length": L,
                        "depth": depth,
                        "accuracy": float("nan"),
                        "token_accuracy": float("nan"),
                        "num_examples": num_examples,
                        "status": f"infeasible: the shortest prompt takes {longest} tokens > {L}",
                    }
                )
                continue
            hits = 0
            for start in range(0, num_examples, batch_size):
                batch = prompts[start : start + batch_size]
                outs = model.generate(
                    batch, max_new_tokens, temperature=0.0, eos_token_id=tokenizer.eos_token_id
                )
                for prompt, out, key in zip(batch, outs, keys[start : start + batch_size]):
                    hits += str(key) in tokenizer.decode(out[prompt.numel():].tolist())
            rows.append(
                {
                    "length": L,
                    "depth": depth,
                    "accuracy": hits / num_examples,
                    "token_accuracy": float("nan"),
                    "num_examples": num_examples,
                    "status": "ok",
                }
            )
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_checkpoint_argument(parser)
    parser.add_argument("--mode", choices=["token", "text"], default="token")
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--depths", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    parser.add_argument(
        "--num-examples", type=int, default=None, help="per cell (default 200 token / 20 text)"
    )
    parser.add_argument("--key-len", type=int, default=4, help="token mode: key tokens (as trained)")
    parser.add_argument("--filler", choices=["random", "repeat"], default="random", help="token mode filler")
    parser.add_argument(
        "--tokenizer", help="text mode: a tokenizer spec (default: the one saved with the run)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=12, help="text mode")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=1_000_003)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--out", type=Path, help="output stem (default evals/results/probes/passkey_<mode>_<run>)"
    )
    args = parser.parse_args(argv)
    model, _ = load_checkpoint_model(args.ckpt, args.device)
    if args.mode == "token":
        rows = evaluate_token_grid(model, args.lengths, args.depths, args.num_examples or 200, args.key_len,
                                   args.filler, args.batch_size or 64, args.seed)
    else:
        from recall_lm.evals.probes.recall_tasks_eval import resolve_tokenizer

        tokenizer = resolve_tokenizer(args.ckpt, args.tokenizer, model.config.vocab_size)
        rows = evaluate_text_grid(model, tokenizer, args.lengths, args.depths, args.num_examples or 20,
                                  args.max_new_tokens, args.batch_size or 8, args.seed)
    name = run_name(args.ckpt)
    out = args.out or ROOT / "evals" / "results" / "probes" / f"passkey_{args.mode}_{name}"
    title = (
        f"Passkey retrieval ({args.mode}) of `{args.ckpt}`; command: "
        "`python -m recall_lm.evals.probes.passkey_eval "
        f"{' '.join(sys.argv[1:] if argv is None else argv)}`"
    )
    return write_report(rows, COLUMNS, out, title, ("length", "depth", args.lengths, args.depths),
                        (f"passkey ({args.mode}): {name}", "depth of the key (0 = start, 1 = end)",
                         "length (tokens)"))


if __name__ == "__main__":
    main()
