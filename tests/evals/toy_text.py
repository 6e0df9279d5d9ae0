"""A tiny text corpus for the text-LM evaluation tests: 30 documents of `nameA = nameB` lines, each line
written three times, so that every document repeats its own bigrams (AR hits exist) at a few tokens each."""

from pathlib import Path

import numpy as np


def toy_documents(tmp_path: Path) -> Path:
    """Write the documents into ``tmp_path/docs`` and return that folder."""
    docs = tmp_path / "docs"
    docs.mkdir()
    rng = np.random.default_rng(0)
    words = [f"name{i}" for i in range(40)]
    for d in range(30):
        picked = rng.choice(words, 6)
        text = " ".join(f"{a} = {b}" for a, b in zip(picked, rng.permutation(picked)))
        (docs / f"d{d}.txt").write_text((text + "\n") * 3)
    return docs
