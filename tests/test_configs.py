"""Every training YAML in configs/ parses, builds its model and data, and the model runs."""
from pathlib import Path

import pytest
import torch

from recall_lm.training import cli as train_cli
from recall_lm.models.decoder import DecoderLM

CONFIGS = sorted(p for p in (Path(train_cli.ROOT) / "configs").rglob("*.yaml") if "sweeps" not in p.parts and not p.name.startswith("_"))


def test_there_are_configs():
    names = {p.relative_to(train_cli.ROOT / "configs").as_posix() for p in CONFIGS}
    assert {"quickstart.yaml", "mqar/attention.yaml", "mqar/linear_attention.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.relative_to(train_cli.ROOT / "configs").as_posix())
def test_config_builds(path, tmp_path):
    """Parse and instantiate everything on the meta device (instant even at 360M parameters), then run
    a real forward pass of the models small enough for a quick CPU check."""
    with torch.device("meta"):
        cli = train_cli.main(["--config", str(path), f"--trainer.default_root_dir={tmp_path}"], run=False)
    config = cli.model.config
    assert config.vocab_size == getattr(cli.datamodule, "vocab_size", config.vocab_size)
    if cli.model.model.num_parameters() < 20_000_000:
        model = DecoderLM(config)
        ids = torch.randint(0, config.vocab_size, (1, 16))
        assert model(ids).logits.shape == (1, 16, config.vocab_size)


def test_bad_yaml_key_is_named(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text((train_cli.ROOT / "configs/quickstart.yaml").read_text().replace("n_layers:", "n_layayers:"))
    with pytest.raises(SystemExit):
        train_cli.main(["--config", str(bad)], run=False)
    assert "n_layayers" in capsys.readouterr().err
