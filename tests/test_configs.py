"""Every training YAML in configs/ parses, builds its model and data, and the model runs."""
from pathlib import Path

import pytest
import torch

from recall_lm.models.decoder import DecoderLM
from recall_lm.training import cli as train_cli

CONFIGS = sorted(
    p
    for p in (Path(train_cli.ROOT) / "configs").rglob("*.yaml")
    if "sweeps" not in p.parts and not p.name.startswith("_")
)


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
    bad.write_text(
        (train_cli.ROOT / "configs/quickstart.yaml").read_text().replace("n_layers:", "n_layayers:")
    )
    with pytest.raises(SystemExit):
        train_cli.main(["--config", str(bad)], run=False)
    assert "n_layayers" in capsys.readouterr().err


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.parent.name in ("zoology", "mqar")],
                         ids=lambda p: p.relative_to(train_cli.ROOT / "configs").as_posix())
def test_config_tree_reads_a_config_as_train_py_does(path, tmp_path):
    """config_tree (what sweeps read settings from) follows ``config: _protocol.yaml`` and dotted keys as the
    CLI does: the parsed model equals the tree's."""
    from dataclasses import asdict

    from recall_lm.training.config_checks import config_tree

    with torch.device("meta"):
        cli = train_cli.main(["--config", str(path), f"--trainer.default_root_dir={tmp_path}"], run=False)
    tree = config_tree(path)["model"]
    parsed = asdict(cli.model.config)
    assert {k: parsed[k] for k in tree["architecture"]} == tree["architecture"]
    assert cli.model.hparams.lr == tree.get("lr", 1e-3)


def test_each_zoology_config_is_the_protocol_and_its_mixer():
    from recall_lm.training.config_checks import config_tree

    protocol = config_tree(train_cli.ROOT / "configs/zoology/_protocol.yaml")
    for path in (train_cli.ROOT / "configs/zoology").glob("[!_]*.yaml"):
        tree = config_tree(path)
        own = tree["model"].pop("architecture")
        assert tree == {
            **protocol,
            "model": {k: v for k, v in protocol["model"].items() if k != "architecture"},
        }
        differs = {k for k, v in own.items() if protocol["model"]["architecture"].get(k) != v}
        assert differs <= {"mixer", "mixer_kwargs", "d_model", "scaled_residual_init"}, path.name
