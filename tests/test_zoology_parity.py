"""Zoology's S1 setting learnt to Zoology's accuracy by the configs/zoology/ models (the learning-parity
claim of the README): val/acc > 0.99 within 3 epochs (936 steps), as Zoology's own loop does (0.998
after 2 epochs with its seed 123). The cosine keeps its 64-epoch length: only max_steps is capped."""
import pytest

from recall_lm.training import cli as train_cli


@pytest.mark.parametrize("config", ["based", "attention"])
def test_zoology_config_reaches_zoologys_accuracy_at_s1(config, tmp_path):
    cli = train_cli.main(["fit", "--config", str(train_cli.ROOT / f"configs/zoology/{config}.yaml"),
                      f"--trainer.default_root_dir={tmp_path}", "--trainer.max_steps=936",
                      "--trainer.enable_progress_bar=false", "--trainer.enable_checkpointing=false"])
    assert float(cli.trainer.callback_metrics["val/acc"]) > 0.99
    assert cli.trainer.current_epoch <= 3
