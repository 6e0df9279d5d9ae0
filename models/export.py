"""Export a train.py checkpoint as a Hugging Face-layout folder: \
``python -m recall_lm.models.export <ckpt> <out_dir>``.

``<ckpt>`` is a ``.ckpt`` file or a run folder (``last.ckpt``); the run's tokenizer (saved by the text
data module) is copied when found. The folder loads with ``DecoderLM.from_pretrained``, in every eval
(``--ckpt <out_dir>``), and with ``transformers.AutoModelForCausalLM`` after ``import recall_lm.models.hf``.
"""
from __future__ import annotations

import argparse
import sys

from recall_lm.models.checkpoint import load_model
from recall_lm.models.pretrained import save_pretrained


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt", help="a train.py checkpoint (.ckpt) or run folder")
    parser.add_argument("out_dir", help="the folder to write (created)")
    args = parser.parse_args(argv)
    from recall_lm.data.tokenizers import tokenizer_for_checkpoint

    try:
        model, _ = load_model(args.ckpt)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    tokenizer = tokenizer_for_checkpoint(args.ckpt)
    out = save_pretrained(model, args.out_dir, tokenizer)
    print(
        f"wrote {out} ({model.num_parameters():,} parameters"
        f"{', tokenizer ' + tokenizer.name if tokenizer else ', no tokenizer found beside the checkpoint'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
