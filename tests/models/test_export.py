"""Exported (Hugging Face-layout) folders: recall_lm.models.export, DecoderLM.save/from_pretrained, evals'
--ckpt, and the transformers wrapper (AutoModelForCausalLM), all offline."""
import json
import pickle
from dataclasses import asdict

import pytest
import torch

from recall_lm.data.tokenizers import ByteTokenizer, tokenizer_for_checkpoint
from recall_lm.models.checkpoint import load_model
from recall_lm.models.config import ModelConfig
from recall_lm.models.decoder import DecoderLM
from recall_lm.models.export import main as export_main

CONFIGS = {
    "tied hybrid": ModelConfig(
        vocab_size=256,
        d_model=32,
        n_layers=3,
        mixer=["base_conv", "based", "swa"],
        mixer_kwargs={"based": {"feature_dim": 4}, "swa": {"window_size": 8}},
    ),
    "untied rwkv7": ModelConfig(
        vocab_size=256,
        d_model=32,
        n_layers=2,
        mixer="rwkv7",
        mlp="rwkv7_cmix",
        tie_embeddings=False,
        mixer_kwargs={"rwkv7": {"head_size": 16, "chunk_size": 16}},
    ),
}


def _model(config):
    torch.manual_seed(0)
    model = DecoderLM(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model.eval()


def _checkpoint(model, run):
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {"model": asdict(model.config)}}, run / "checkpoints" / "last.ckpt")
    ByteTokenizer().save(run / "tokenizer")


@pytest.mark.parametrize("name", list(CONFIGS))
def test_round_trip_gives_identical_logits_and_never_unpickles(name, tmp_path, monkeypatch):
    model = _model(CONFIGS[name])
    model.save_pretrained(tmp_path / "out")
    assert json.loads((tmp_path / "out" / "config.json").read_text())["model_type"] == "recall_lm"

    def refuse(*args, **kwargs):
        raise AssertionError("loading an exported folder must not unpickle")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    loaded = DecoderLM.from_pretrained(tmp_path / "out")
    ids = torch.randint(0, 256, (2, 13))
    assert loaded.config == model.config and not loaded.training
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)
    if model.config.tie_embeddings:
        assert loaded.head.weight is loaded.embedding.weight


def test_export_command_writes_a_folder_every_eval_loads(tmp_path, capsys):
    model = _model(CONFIGS["tied hybrid"])
    _checkpoint(model, tmp_path / "run")
    assert export_main([str(tmp_path / "run"), str(tmp_path / "out")]) == 0
    assert "tokenizer byte" in capsys.readouterr().out
    loaded, hparams = load_model(tmp_path / "out")  # the loader behind every eval's --ckpt
    assert hparams["architecture"] == asdict(model.config)
    assert tokenizer_for_checkpoint(tmp_path / "out").name == "byte"
    ids = torch.randint(0, 256, (1, 9))
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)

    from recall_lm.evals.tools import generate

    args = generate.parse_args(["--ckpt", str(tmp_path / "out"), "--prompt", "ab", "--max-new-tokens", "5",
                                "--temperature", "0"])
    assert isinstance(generate.run(args), str)


def test_export_errors_name_the_path(tmp_path, capsys):
    assert export_main([str(tmp_path / "nothing"), str(tmp_path / "out")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (tmp_path / "bad" / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="not 'recall_lm'"):
        DecoderLM.from_pretrained(tmp_path / "bad")


def test_transformers_auto_classes_load_and_generate(tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    import recall_lm.models.hf  # noqa: F401  (registers recall_lm)

    model = _model(CONFIGS["untied rwkv7"])
    model.save_pretrained(tmp_path / "out")
    assert AutoConfig.from_pretrained(tmp_path / "out").to_model_config() == model.config
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    ids = torch.randint(1, 256, (2, 7))
    out = hf(ids, labels=ids)
    torch.testing.assert_close(out.logits, model(ids).logits, rtol=0, atol=0)
    expected = torch.nn.functional.cross_entropy(out.logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    torch.testing.assert_close(out.loss, expected)
    generated = hf.generate(ids, max_new_tokens=6)
    ours = torch.stack(model.generate(ids, 6, temperature=0.0))
    assert torch.equal(generated, ours) and generated.shape == (2, 13)
    # greedy decoding = the argmax of a full forward at every step
    full = model(generated[:, :-1]).logits.argmax(-1)[:, 6:]
    assert torch.equal(full, generated[:, 7:])
    hf.save_pretrained(tmp_path / "again")
    torch.testing.assert_close(
        DecoderLM.from_pretrained(tmp_path / "again")(ids).logits, out.logits, rtol=0, atol=0
    )
