"""Every command the README and docs/ show names something that exists: modules run with ``python -m``,
config files, and the console script."""
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_modules_and_configs_in_commands_exist(doc):
    text = doc.read_text()
    modules = set(re.findall(r"python -m ([A-Za-z_][\w.]*)", text))
    missing = sorted(m for m in modules if m.startswith("recall_lm") and importlib.util.find_spec(m) is None)
    assert not missing, f"{doc.name} runs modules that do not exist: {missing}"
    assert not sorted(
        m for m in modules if m.split(".")[0] in ("evals", "models", "kernels", "layers", "data")
    )
    configs = set(re.findall(r"(?<![\w/])(configs/[\w/.\-]+\.yaml)", text))
    absent = sorted(c for c in configs if "<" not in c and not (ROOT / c).is_file())
    assert not absent, f"{doc.name} names config files that do not exist: {absent}"
    assert "lm_eval --model recall-lm" not in text  # lm-eval 0.4 cannot find the model: recall-lm-eval
