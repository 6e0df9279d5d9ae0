"""The probe contract (recall_lm.data.probe): every slice type follows it, one length field for all, and a
slice that breaks it is named before any training."""
from dataclasses import dataclass

import pytest
import torch

from recall_lm.data.mqar import MQARSlice
from recall_lm.data.passkey import PasskeySlice
from recall_lm.data.probe import ProbeSlice
from recall_lm.data.probe_datamodule import PasskeyDataModule
from recall_lm.data.set_disjointness import SetDisjointnessSlice
from recall_lm.data.slices_datamodule import SlicesDataModule
from recall_lm.models.config import IGNORE_INDEX


@pytest.mark.parametrize(
    "item", [MQARSlice(32, 4, 8), PasskeySlice(32, 0.5, 2, 8), SetDisjointnessSlice(2, 4, 2, 8)]
)
def test_every_slice_type_follows_the_contract(item):
    assert isinstance(item, ProbeSlice)
    inputs, labels = item.generate(64, seed=0)
    assert inputs.shape == labels.shape == (item.num_examples, item.seq_len)
    assert bool((labels != IGNORE_INDEX).any(dim=1).all())


def test_mqar_length_is_zoologys_input_seq_len():
    assert MQARSlice(input_seq_len=96, num_kv_pairs=4).seq_len == 96


@dataclass
class NoLength:
    num_examples: int = 8
    name: str = "x"

    def generate(self, vocab_size, seed):
        return torch.zeros(8, 4, dtype=torch.long), torch.zeros(8, 4, dtype=torch.long)


@dataclass
class WrongShape(NoLength):
    seq_len: int = 5


@dataclass
class NothingScored(NoLength):
    seq_len: int = 4

    def generate(self, vocab_size, seed):
        return torch.zeros(8, 4, dtype=torch.long), torch.full((8, 4), IGNORE_INDEX)


def test_a_slice_without_the_contract_is_named():
    with pytest.raises(ValueError, match=r"SlicesDataModule.train_slices\[0\]: NoLength is not a probe slice "
                                         r"\(it lacks seq_len"):
        SlicesDataModule(64, [NoLength()], [NoLength()], batch_size=8)


@pytest.mark.parametrize("item, message", [(WrongShape(), r"generated inputs \(8, 4\) .* expected \(8, 5\)"),
                                           (NothingScored(), "an example has no scored position")])
def test_generated_data_that_breaks_the_contract_is_named(item, message):
    module = SlicesDataModule(64, [item], [item], batch_size=8)
    with pytest.raises(ValueError, match=message):
        module.setup("fit")


def test_passkey_module_serves_batches_of_its_seq_len():
    module = PasskeyDataModule(vocab_size=64, train_slices=[PasskeySlice(32, None, 2, 16)],
                               test_slices=[PasskeySlice(32, 0.0, 2, 8)], batch_size=8)
    module.setup("fit")
    inputs, labels = next(iter(module.train_dataloader()))
    assert inputs.shape == (8, 32) and labels.shape == (8, 32)
