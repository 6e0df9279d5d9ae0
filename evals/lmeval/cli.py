"""lm-eval's own command line with the ``recall-lm`` model registered:

    recall-lm-eval --model recall-lm --model_args ckpt=runs/lm/tiny --include_path evals/lmeval/tasks \\
        --tasks recall_fda
    python -m recall_lm.evals.lmeval.cli ...        (the same, without the console script)

Every argument goes to lm-eval unchanged. lm-eval 0.4 has no plugin discovery for models, so a plain
``lm_eval --model recall-lm`` cannot know the model; this command registers it (by importing
``recall_lm.evals.lmeval.harness``) and then runs ``lm_eval.__main__.cli_evaluate``.
"""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    """Run lm-eval's CLI on ``argv`` (default: the command line)."""
    from lm_eval.__main__ import cli_evaluate

    import recall_lm.evals.lmeval.harness  # noqa: F401  (registers recall-lm)

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()


if __name__ == "__main__":
    main()
