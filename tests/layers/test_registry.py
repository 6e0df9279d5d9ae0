"""The registry lists every module that registers a mixer or an MLP, so ``mixers()`` is complete whichever
module a program imported first."""
import re
import subprocess
import sys
from pathlib import Path

from recall_lm.layers.mlp import mlps
from recall_lm.layers.registry import MIXER_MODULES, mixers

LAYERS = Path(__file__).resolve().parents[2] / "layers"


def test_mixer_modules_are_exactly_the_files_that_register():
    registering = {
        p.stem for p in LAYERS.glob("*.py") if re.search(r"^@register_(mixer|mlp)\(", p.read_text(), re.M)
    }
    assert set(MIXER_MODULES) == registering


def test_registry_is_complete_whatever_is_imported_first():
    """A fresh process that imports one mixer module (or only the MLP module) still sees every name."""
    for first in ("recall_lm.layers.rwkv7", "recall_lm.layers.mlp"):
        code = (
            f"import {first}\nfrom recall_lm.layers.registry import mixers\n"
            "from recall_lm.layers.mlp import mlps\n"
            "print(sorted(mixers()), sorted(mlps()), sep='|')"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip() == f"{sorted(mixers())}|{sorted(mlps())}", first
    assert {"rwkv6_cmix", "rwkv7_cmix"} <= set(mlps())
