"""lm-eval's own command line with the ``recall-lm`` model registered:

    recall-lm-eval --model recall-lm --model_args ckpt=runs/lm/tiny --include_path evals/tasks --tasks recall_fda
    python -m recall_lm.evals.lm_eval_cli ...        (the same, without the console script)

Every argument goes to lm-eval unchanged. lm-eval 0.4 has no plugin discovery for models, so a plain
``lm_eval --model recall-lm`` cannot know the model; this command registers it (by importing
``recall_lm.evals.harness``) and then runs ``lm_eval.__main__.cli_evaluate``.
"""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    """Run lm-eval's CLI on ``argv`` (default: the command line)."""
    import recall_lm.evals.harness  # noqa: F401  (registers recall-lm)
    from lm_eval.__main__ import cli_evaluate

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()


if __name__ == "__main__":
    main()
