"""The mixer contract (recall_lm.layers.contract): the registry refuses a class that does not follow it, and
every registered mixer is everywhere a mixer must be (the add-a-mixer checklist of docs/architecture.md)."""
from pathlib import Path

import pytest
from torch import nn

from recall_lm.evals.bench.throughput import MODELS, model_config
from recall_lm.layers.contract import Mixer
from recall_lm.layers.mlp import register_mlp
from recall_lm.layers.registry import MIXERS, mixers, register_mixer
from recall_lm.training.config_checks import config_tree
from tests.layers.mixer_cases import MIXER_CASES

ROOT = Path(__file__).resolve().parents[2]


def test_registering_a_class_that_is_not_a_mixer_is_one_line():
    with pytest.raises(
        TypeError,
        match=r"^mixer 'plain' \(Plain\) does not follow the mixer contract: subclass "
        r"recall_lm.layers.contract.Mixer \(recall_lm.layers.contract\)$",
    ):
        register_mixer("plain")(type("Plain", (nn.Module,), {}))
    assert "plain" not in MIXERS


def test_a_mixer_without_a_required_method_names_it():
    class Partial(Mixer):
        def forward(self, x, state=None, documents=None):
            return x, state

        def state_size(self, seq_len=1):
            return 0

    with pytest.raises(TypeError, match=r"define init_state\(\); define flops_per_token\(\)"):
        register_mixer("partial")(Partial)
    assert "partial" not in MIXERS


def test_an_mlp_without_flops_is_refused():
    with pytest.raises(TypeError, match="mlp 'noflops' .* must define flops_per_token"):
        register_mlp("noflops")(type("NoFlops", (nn.Module,), {}))


def _config_mixers(folder: str) -> set[str]:
    found = set()
    for path in (ROOT / "configs" / folder).glob("*.yaml"):
        mixer = ((config_tree(path).get("model") or {}).get("architecture") or {}).get("mixer", [])
        found |= {mixer} if isinstance(mixer, str) else set(mixer)
    return found


def test_every_registered_mixer_is_everywhere_a_mixer_must_be():
    """What each mixer still lacks of the checklist; a new mixer fails here until it has all of it."""
    mqar, zoology = _config_mixers("mqar"), _config_mixers("zoology")
    benchmarked = set()
    for name in MODELS:
        config = model_config(name, 64, 2, 64)
        benchmarked |= {config.mixer} if isinstance(config.mixer, str) else set(config.mixer)
    models_doc, readme = (ROOT / "docs/models.md").read_text(), (ROOT / "README.md").read_text()
    gaps = {}
    for name in mixers():
        lacks = [what for what, ok in [
            ("a case in tests/layers/mixer_cases.py", name in MIXER_CASES),
            ("a config in configs/mqar/", name in mqar),
            ("a config in configs/zoology/", name in zoology),
            ("a model in evals/bench/throughput.py", name in benchmarked),
            ("a row in docs/models.md", f"| `{name}` " in models_doc),
            ("a row in the README's mixer table", f"| `{name}` " in readme),
        ] if not ok]
        if lacks:
            gaps[name] = lacks
    assert not gaps, gaps
