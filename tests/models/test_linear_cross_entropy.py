"""The chunked LM head + cross-entropy against the plain one: loss, argmax, gradients, and in training."""
import pytest
import torch
import torch.nn.functional as F

from recall_lm.models.config import ModelConfig
from recall_lm.models.linear_cross_entropy import linear_cross_entropy
from recall_lm.training.task import LanguageModelTask


@pytest.mark.parametrize("chunk_rows", [1, 7, 64, 1000])
def test_equals_the_full_head_and_loss(chunk_rows):
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(53, 16, dtype=torch.float64, generator=gen, requires_grad=True)
    weight = torch.randn(97, 16, dtype=torch.float64, generator=gen, requires_grad=True)
    labels = torch.randint(0, 97, (53,), generator=gen)
    labels[::5] = -100
    loss, correct = linear_cross_entropy(hidden, weight, labels, chunk_rows)
    logits = hidden @ weight.T
    want = F.cross_entropy(logits, labels, reduction="sum")
    torch.testing.assert_close(loss, want)
    assert torch.equal(correct, (logits.argmax(-1) == labels) & (labels != -100))
    (loss * 0.3).backward()
    dh, dw = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    (want * 0.3).backward()
    torch.testing.assert_close(dh, hidden.grad)
    torch.testing.assert_close(dw, weight.grad)


def test_training_loss_and_gradients_equal_the_full_head():
    config = ModelConfig(vocab_size=300, d_model=16, n_layers=2, mixer="retnet", mlp="swiglu")
    torch.manual_seed(0)
    full = LanguageModelTask(config)
    chunked = LanguageModelTask(config, chunked_loss_rows=7)
    chunked.load_state_dict(full.state_dict())
    ids, labels = torch.randint(0, 300, (3, 10)), torch.randint(0, 300, (3, 10))
    (loss_a, out_a), (loss_b, out_b) = full._loss((ids, labels)), chunked._loss((ids, labels))
    assert out_b.logits is None and out_b.correct.shape == (3, 10)
    torch.testing.assert_close(loss_b, loss_a)
    loss_a.backward()
    loss_b.backward()
    for p, q in zip(full.parameters(), chunked.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6)
    assert torch.equal(out_b.correct, out_a.logits.argmax(-1) == labels)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="chunk_rows"):
        linear_cross_entropy(torch.zeros(2, 3), torch.zeros(4, 3), torch.zeros(2, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="hidden"):
        linear_cross_entropy(torch.zeros(2, 3), torch.zeros(4, 5), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="chunked_loss_rows"):
        LanguageModelTask(ModelConfig(vocab_size=8, d_model=8, n_layers=1), chunked_loss_rows=-1)


def test_memory_benchmark_runs_both_variants_to_the_same_loss(tmp_path):
    from recall_lm.evals.bench import loss as bench_loss

    full, chunked = bench_loss.main(
        [
            "--tokens",
            "64",
            "--d-model",
            "8",
            "--vocab",
            "512",
            "--chunk-rows",
            "16",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "loss.md"),
        ]
    )
    assert full["variant"] == "full" and chunked["variant"] == "chunked"
    assert abs(full["loss"] - chunked["loss"]) < 1e-5
    assert "less memory" in (tmp_path / "loss.md").read_text()
