"""recall_lm.models.checkpoint: a saved train.py checkpoint rebuilds the same model, weights-only."""
from dataclasses import asdict

import pytest
import torch

from recall_lm.models.checkpoint import load_model, resolve_checkpoint
from recall_lm.models.config import ModelConfig
from recall_lm.models.decoder import DecoderLM


def _save(model: DecoderLM, path, key: str = "architecture"):
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {key: asdict(model.config), "lr": 1e-3}}, path)


def test_load_model_from_file_and_run_folder(tmp_path):
    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=64,
        d_model=32,
        n_layers=2,
        mixer=["based", "swa"],
        mixer_kwargs={"based": {"feature_dim": 8, "num_heads": 2}, "swa": {"window_size": 8}},
    )
    model = DecoderLM(config).eval()
    (tmp_path / "checkpoints").mkdir()
    _save(model, tmp_path / "checkpoints" / "last.ckpt")
    ids = torch.randint(0, 64, (2, 11))
    for where in (tmp_path, tmp_path / "checkpoints", tmp_path / "checkpoints" / "last.ckpt"):
        loaded, hparams = load_model(where)
        assert hparams["lr"] == 1e-3 and loaded.config == config and not loaded.training
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)


def test_a_checkpoint_from_before_the_architecture_rename_still_loads(tmp_path):
    """Checkpoints written while the ModelConfig was ``model.model`` keep it under ``model``."""
    model = DecoderLM(ModelConfig(vocab_size=64, d_model=16, n_layers=1)).eval()
    _save(model, tmp_path / "old.ckpt", key="model")
    loaded, _ = load_model(tmp_path / "old.ckpt")
    ids = torch.randint(0, 64, (1, 5))
    assert loaded.config == model.config
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)


def test_missing_checkpoint_and_foreign_file_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        resolve_checkpoint(tmp_path)
    torch.save({"state_dict": {}, "hyper_parameters": {}}, tmp_path / "x.ckpt")
    with pytest.raises(ValueError, match="not a train.py checkpoint"):
        load_model(tmp_path / "x.ckpt")
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"notes.txt is not a train.py checkpoint \("):
        load_model(text)
    torch.save({"weight": torch.zeros(2)}, tmp_path / "weights.pt")
    with pytest.raises(ValueError, match="it has no state_dict"):
        load_model(tmp_path / "weights.pt")
