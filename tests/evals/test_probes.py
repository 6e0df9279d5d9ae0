"""The probe evaluators (MQAR grid, passkey grid, JRT table) with stub models whose answers are known:
an oracle that looks the answer up in the context (accuracy 1) and a random guesser."""
import json
from dataclasses import asdict
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from recall_lm.data.mqar import multiquery_ar
from recall_lm.data.passkey import KEY_MARK, QUERY_MARK
from recall_lm.evals.probes import jrt, mqar_eval
from recall_lm.evals.probes import passkey_eval as passkey
from recall_lm.models.config import ModelConfig
from recall_lm.models.decoder import DecoderLM, LMOutput


class StubLM(nn.Module):
    """DecoderLM's interface (forward(ids) -> LMOutput, .config.vocab_size, parameters) around a
    per-sequence rule ``predict(row: list[int]) -> [T] next-token guesses`` (causal by construction)."""

    def __init__(self, vocab_size: int, predict):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(vocab_size=vocab_size)
        self.predict = predict

    def forward(self, ids, state=None):
        B, T = ids.shape
        logits = torch.zeros(B, T, self.config.vocab_size)
        for b in range(B):
            guesses = self.predict(ids[b].tolist())
            logits[b, torch.arange(T), torch.as_tensor(guesses)] = 1.0
        return LMOutput(logits, None, logits.new_zeros(()))


def mqar_oracle(vocab_size):
    """After a key seen earlier followed by a value, predict that value (plain dict lookup)."""
    def predict(row):
        memory, out = {}, []
        for t, token in enumerate(row):
            if t > 0 and 1 <= row[t - 1] < vocab_size // 2 and token >= vocab_size // 2:
                memory.setdefault(row[t - 1], token)
            out.append(memory.get(token, 0))
        return out
    return predict


def random_value_guesser(vocab_size, seed=0):
    rng = np.random.default_rng(seed)
    return lambda row: rng.integers(vocab_size // 2, vocab_size, size=len(row)).tolist()


def passkey_oracle(row):
    """After QUERY_MARK, repeat the tokens that followed KEY_MARK, one per step."""
    out = []
    for t in range(len(row)):
        seen = row[: t + 1]
        if QUERY_MARK in seen and KEY_MARK in seen:
            m, q = seen.index(KEY_MARK), seen.index(QUERY_MARK)
            out.append(row[m + 1 + (t - q)])
        else:
            out.append(0)
    return out


def test_mqar_grid_oracle_random_and_infeasible():
    V = 256
    oracle = StubLM(V, mqar_oracle(V))
    rows = mqar_eval.evaluate_grid(oracle, [64, 128], [4, 8, 32], num_examples=24, batch_size=8)
    by = {(r["seq_len"], r["num_kv_pairs"]): r for r in rows}
    assert by[(64, 4)]["accuracy"] == by[(64, 8)]["accuracy"] == by[(128, 32)]["accuracy"] == 1.0
    assert np.isnan(by[(64, 32)]["accuracy"]) and "infeasible" in by[(64, 32)]["status"]
    assert "2·num_kv_pairs·num_passes" in by[(64, 32)]["status"]  # the generator's reason is kept
    twice = mqar_eval.evaluate_grid(oracle, [64], [8], num_examples=16, num_passes=2)
    assert twice[0]["accuracy"] == 1.0
    guesser = StubLM(V, random_value_guesser(V))
    acc = mqar_eval.evaluate_grid(guesser, [128], [16], num_examples=200)[0]["accuracy"]
    assert 0.003 < acc < 0.013  # chance over the value half: 1/128 = 0.0078 (3,200 queries)


def test_mqar_accuracy_matches_per_example_mean():
    """A guesser right on exactly the first query of each example scores 1/kv per example."""
    V, kv = 128, 4
    inputs, labels = multiquery_ar(V, 10, 64, kv, seed=0)
    first = [(row != -100).nonzero()[0].item() for row in labels]

    class FirstOnly(StubLM):
        def forward(self, ids, state=None):
            logits = torch.zeros(*ids.shape, V)
            for b in range(ids.shape[0]):
                logits[b, first[b], labels[b, first[b]]] = 1.0
            return LMOutput(logits, None, logits.new_zeros(()))

    assert mqar_eval.mqar_accuracy(FirstOnly(V, None), inputs, labels, batch_size=64) == pytest.approx(1 / kv)


def save_fake_checkpoint(path, config: ModelConfig):
    """A checkpoint in train.py's format (plain types) of an untrained model: for CLI plumbing tests."""
    model = DecoderLM(config)
    torch.save({"hyper_parameters": {"model": asdict(config)},
                "state_dict": {"model." + k: v for k, v in model.state_dict().items()}}, path)
    return path


@pytest.fixture(scope="module")
def fake_ckpt(tmp_path_factory):
    config = ModelConfig(vocab_size=128, d_model=16, n_layers=1, mixer="attention",
                         mixer_kwargs={"attention": {"num_heads": 1}}, mlp="none")
    return save_fake_checkpoint(tmp_path_factory.mktemp("ckpt") / "last.ckpt", config)


def test_mqar_eval_cli_writes_table_and_heatmap(fake_ckpt, tmp_path):
    rows = mqar_eval.main(["--ckpt", str(fake_ckpt), "--seq-lens", "64", "96", "--kv", "4", "32",
                           "--num-examples", "8", "--out", str(tmp_path / "grid")])
    assert len(rows) == 4 and sum(r["status"] == "ok" for r in rows) == 2
    assert (tmp_path / "grid.png").stat().st_size > 0
    assert "infeasible" in (tmp_path / "grid.csv").read_text()
    assert "| 64 | 4 | 1 |" in (tmp_path / "grid.md").read_text()


def test_mqar_eval_draws_from_the_vocabulary_the_run_trained_on(tmp_path, monkeypatch):
    """A model with a 128-token embedding trained on MQAR over 64 tokens: the run's config.yaml says so,
    and the test data keeps to those 64 tokens (values in its upper half, not the model's)."""
    config = ModelConfig(vocab_size=128, d_model=16, n_layers=1, mixer="attention",
                         mixer_kwargs={"attention": {"num_heads": 1}}, mlp="none")
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "csv").mkdir()
    ckpt = save_fake_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", config)
    (tmp_path / "run" / "csv" / "config.yaml").write_text("data:\n  init_args:\n    vocab_size: 64\n")
    assert mqar_eval.training_data(ckpt)["vocab_size"] == 64
    seen, real = [], mqar_eval.multiquery_ar
    monkeypatch.setattr(mqar_eval, "multiquery_ar",
                        lambda vocab_size, *a, **k: seen.append(vocab_size) or real(vocab_size, *a, **k))
    mqar_eval.main(["--ckpt", str(ckpt), "--seq-lens", "32", "--kv", "4", "--num-examples", "4",
                    "--out", str(tmp_path / "grid")])
    assert seen == [64] and "vocabulary 64" in (tmp_path / "grid.md").read_text()


def test_passkey_grid_oracle_and_random(fake_ckpt, tmp_path):
    V = 128
    rows = passkey.evaluate_token_grid(StubLM(V, passkey_oracle), [32, 64], [0.0, 0.5, 1.0], num_examples=8)
    assert all(r["accuracy"] == r["token_accuracy"] == 1.0 for r in rows)
    rows = passkey.evaluate_token_grid(StubLM(V, random_value_guesser(V)), [64], [0.5], num_examples=64)
    assert rows[0]["accuracy"] == 0.0 and rows[0]["token_accuracy"] < 0.1
    rows = passkey.main(["--ckpt", str(fake_ckpt), "--lengths", "8", "32", "--depths", "0", "1",
                         "--num-examples", "4", "--out", str(tmp_path / "pk")])
    assert [r["status"].startswith("infeasible") for r in rows] == [True, True, False, False]
    assert (tmp_path / "pk.png").stat().st_size > 0


def test_passkey_text_mode_with_an_echoing_model():
    """A model that, after the question, spells the pass key it saw: text-mode accuracy 1."""
    from recall_lm.data.passkey import TEXT_QUESTION
    from recall_lm.data.tokenizers import load_tokenizer

    tok = load_tokenizer("byte")

    class Echo(StubLM):
        def init_state(self, batch_size, device=None, dtype=torch.float32):
            return SimpleNamespace(rows=[[] for _ in range(batch_size)])

        def forward(self, ids, state=None):
            logits = torch.zeros(*ids.shape, 256)
            for b in range(ids.shape[0]):
                state.rows[b] += ids[b].tolist()
                text = tok.decode(state.rows[b])
                if TEXT_QUESTION in text:
                    key = " " + text.split("The pass key is ")[1].split(".")[0]
                    done = len(text) - text.index(TEXT_QUESTION) - len(TEXT_QUESTION)
                    logits[b, -1, ord(key[done]) if done < len(key) else 10] = 1.0
            return LMOutput(logits, state, logits.new_zeros(()))

        def generate(self, input_ids, max_new_tokens, **kwargs):
            from recall_lm.models.generation import generate

            return generate(self, input_ids, max_new_tokens, **kwargs)

    rows = passkey.evaluate_text_grid(
        Echo(256, None), tok, [400, 600], [0.0, 1.0], num_examples=3, batch_size=3
    )
    assert [r["accuracy"] for r in rows] == [1.0] * 4
    short = passkey.evaluate_text_grid(Echo(256, None), tok, [300], [0.5], num_examples=2)  # the minimum: 322
    assert (
        short[0]["status"].startswith("infeasible: the shortest prompt takes") and short[0]["accuracy"] != 0.0
    )


def test_jrt_table_from_collected_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(jrt, "RESULTS", tmp_path)
    (tmp_path / "jrt_runs").mkdir()
    for passes, acc in [(1, 0.25), (2, 0.75)]:
        (tmp_path / "jrt_runs" / f"based_x{passes}.json").write_text(json.dumps({
            "config": "configs/mqar/based.yaml", "mixer": "base_conv+based", "params": 1000,
            "state_size": 10 * passes, "state_at_len": 64, "steps": 400, "seconds": 1.0,
            "metrics": {"val/acc": acc}}))
    jrt.main([str(jrt.ROOT / "configs/mqar/based.yaml"), "--collect"])
    table = (tmp_path / "jrt_cpu.md").read_text()
    assert "| 0.250 | 0.750 | +0.500 |" in table and "OMP_NUM_THREADS=1" in table
    args = jrt.train_args(jrt.ROOT / "configs/mqar/based.yaml", 2, ["--seed_everything", "1"])
    assert args[1].endswith("_jrt_x2.yaml") and args[-2:] == ["--seed_everything", "1"]
    runs = jrt.training_runs([jrt.ROOT / "configs/mqar/based.yaml", jrt.ROOT / "configs/mqar/mom.yaml"], [])
    assert [r.meta["jrt"] for r in runs] == [
        ["mom", 1],
        ["mom", 2],
        ["based", 1],
        ["based", 2],
    ]  # slowest first
    assert runs[3].args[:2] == ["--config", str(jrt.ROOT / "configs/mqar/based.yaml")]
    assert runs[3].result.name == "based_x2.json" and "_jrt_x2.yaml" in runs[3].args[3]


def test_jrt_inference_gain_with_the_oracle():
    rows = jrt.inference_gain(StubLM(256, mqar_oracle(256)), [4, 8], region=16, num_examples=8)
    assert [(r["L x1"], r["L x2"]) for r in rows] == [(24, 32), (32, 48)]
    assert all(r["acc x1"] == r["acc x2"] == 1.0 and r["gain"] == 0.0 for r in rows)


def test_training_settings_read_from_the_run_config(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "csv").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert mqar_eval.training_settings(run) is None
    (run / "csv" / "config.yaml").write_text(
        "data:\n  init_args:\n    train_slices:\n    - {input_seq_len: 64, num_kv_pairs: 4}\n"
        "    - {input_seq_len: 64, num_kv_pairs: 8, num_passes: 2}\n")
    assert mqar_eval.training_settings(run) == {(64, 4, 1), (64, 8, 2)}


@pytest.mark.parametrize("argv, message", [(["--limit", "0"], "--limit must be ≥ 1"),
                                           (["--context-len", "0"], "--context-len must be ≥ 1")])
def test_recall_tasks_cli_checks_sizes_first(fake_ckpt, capsys, argv, message):
    from recall_lm.evals.probes import recall_tasks_eval as recall_tasks

    with pytest.raises(SystemExit):
        recall_tasks.main(["--ckpt", str(fake_ckpt), "--task", "swde", *argv])
    assert message in capsys.readouterr().err
