"""The same-budget language-model comparison's sweep (configs/sweeps/lm_compare_cpu_lr.yaml): one model per
family, parameters (embeddings included) within ±5 % of attention's, every point accepted by train.py's
parser."""

import pytest
import yaml

from recall_lm.evals.common import ROOT
from recall_lm.evals.sweeps import sweep as sw
from recall_lm.models.config import ModelConfig
from recall_lm.models.decoder import DecoderLM

SWEEP = ROOT / "configs/sweeps/lm_compare_cpu_lr.yaml"


def architecture(sweep, mixer) -> dict:
    base = yaml.safe_load((ROOT / sweep.base[mixer]).read_text())["model"]["architecture"]
    for key, value in sweep.base_sets.get(mixer, {}).items():
        base[key.removeprefix("model.architecture.")] = value
    return base


def test_families_match_attentions_size_within_5_percent(tmp_path):
    sweep = sw.load_sweep(SWEEP)
    assert set(sweep.base) == {"attention", "base_conv", "based", "rwkv7", "mamba2", "gated_deltanet", "kda"}
    counts = {m: DecoderLM(ModelConfig(**architecture(sweep, m))).num_parameters() for m in sweep.base}
    assert counts["attention"] == 1_574_016  # as configs/lm/compare.yaml says
    for mixer, n in counts.items():
        assert abs(n - counts["attention"]) <= 0.05 * counts["attention"], (mixer, n)


@pytest.mark.slow
def test_every_point_parses(tmp_path):
    points = sw.expand(sw.load_sweep(SWEEP), tmp_path / "runs", wandb=False)
    assert len(points) == 14
    sw.check_train_args(points)
