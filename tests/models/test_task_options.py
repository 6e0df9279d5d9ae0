"""LanguageModelTask: the head at labelled positions only, Zoology's optimiser options, data checks."""
import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from recall_lm.data.mqar import MQARSlice
from recall_lm.data.mqar_datamodule import MQARDataModule
from recall_lm.models.config import ModelConfig
from recall_lm.training.task import IGNORE_INDEX, LanguageModelTask, per_example_accuracy, warmup_cosine

CONFIG = ModelConfig(vocab_size=64, d_model=16, n_layers=2, mixer=["base_conv", "based"],
                     mixer_kwargs={"based": {"feature_dim": 4}}, mlp="none")


def mqar_batch(n=6, T=16):
    from recall_lm.data.mqar import multiquery_ar

    return multiquery_ar(64, n, T, 3, seed=0)


def test_labelled_positions_loss_and_gradients_equal_the_full_head():
    torch.manual_seed(0)
    task = LanguageModelTask(CONFIG)
    ids, labels = mqar_batch()
    assert (labels != IGNORE_INDEX).float().mean() < 0.5
    loss, out = task._loss((ids, labels))
    assert out.logits.shape == (int((labels != IGNORE_INDEX).sum()), 64)
    loss.backward()
    grads = [p.grad.clone() for p in task.parameters()]
    task.zero_grad()
    full = task.model(ids).logits
    want = F.cross_entropy(full.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
    want.backward()
    torch.testing.assert_close(loss, want)
    for g, p in zip(grads, task.parameters()):
        torch.testing.assert_close(g, p.grad)
    torch.testing.assert_close(per_example_accuracy(out.logits, labels), per_example_accuracy(full, labels))


def test_per_example_accuracy_at_labelled_positions_by_hand():
    labels = torch.tensor([[-100, 3, -100, 1], [2, -100, -100, -100]])
    logits = torch.zeros(3, 4)  # rows: (0, 1), (0, 3), (1, 0) in row-major mask order
    logits[0, 3] = logits[1, 0] = logits[2, 2] = 1.0  # right, wrong, right
    torch.testing.assert_close(per_example_accuracy(logits, labels), torch.tensor([0.5, 1.0]))


def test_text_batches_compute_every_position():
    task = LanguageModelTask(CONFIG)
    ids = torch.randint(0, 64, (2, 8))
    _, out = task._loss((ids, torch.randint(0, 64, (2, 8))))
    assert out.logits.shape == (2, 8, 64)


def test_warmup_free_cosine_is_torchs_cosine_annealing():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=7, eta_min=0.0)
    for epoch in range(7):
        assert warmup_cosine(epoch, 0, 7, 0.0) == pytest.approx(opt.param_groups[0]["lr"], abs=1e-12)
        opt.step()
        schedule.step()


class LearningRates(L.Callback):
    def __init__(self):
        self.rates = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.rates.append((trainer.current_epoch, trainer.optimizers[0].param_groups[0]["lr"]))


def tiny_data(batch_size=8):
    return MQARDataModule(vocab_size=64, batch_size=batch_size, train_slices=[MQARSlice(16, 3, 24)],
                          test_slices=[MQARSlice(16, 3, 8)])


def fit(task, epochs, callbacks=(), data=None):
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=list(callbacks),
        accelerator="cpu",
    )
    trainer.fit(task, datamodule=data or tiny_data())
    return trainer


def test_epoch_interval_cosine_steps_once_per_epoch():
    rates = LearningRates()
    fit(LanguageModelTask(CONFIG, lr=0.01, warmup_steps=0, min_lr_ratio=0.0, lr_interval="epoch"), 4, [rates])
    assert len(rates.rates) == 12  # 3 batches × 4 epochs
    for epoch, lr in rates.rates:
        assert lr == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * epoch / 4)), rel=1e-9)


def test_weight_decay_on_all_parameters():
    task = LanguageModelTask(CONFIG, weight_decay_on="all")
    decayed, plain = task.build_optimizer().param_groups
    assert decayed["weight_decay"] == 0.1 and len(decayed["params"]) == len(list(task.parameters()))
    assert not plain["params"]
    decayed, plain = LanguageModelTask(CONFIG).build_optimizer().param_groups
    assert all(p.ndim >= 2 for p in decayed["params"]) and plain["params"]
    assert all(p.ndim == 1 for p in plain["params"]) and plain["weight_decay"] == 0.0


@pytest.mark.parametrize("kwargs, message", [
    ({"lr_interval": "batch"}, "lr_interval"),
    ({"weight_decay_on": "some"}, "weight_decay_on"),
    ({"warmup_steps": -1}, "warmup_steps"),
])
def test_bad_task_options_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LanguageModelTask(CONFIG, **kwargs)


def test_data_vocabulary_larger_than_the_model_is_refused():
    task = LanguageModelTask(ModelConfig(**{**CONFIG.__dict__, "vocab_size": 32}))
    with pytest.raises(ValueError, match="vocab_size"):
        task.check_data(tiny_data())
    with pytest.raises(ValueError, match="model.architecture.vocab_size=32"):
        fit(task, 1)
