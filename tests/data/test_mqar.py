"""MQAR generator: the Zoology definition, property by property."""
import numpy as np
import pytest
import torch

from recall_lm.data.mqar import IGNORE_INDEX, MQARSlice, multiquery_ar, query_slot_probabilities

V, N, L, KV = 8192, 300, 128, 8


@pytest.fixture(scope="module")
def plain():
    return multiquery_ar(V, N, L, KV, random_non_queries=False, seed=3)


def test_shapes_and_dtypes(plain):
    inputs, labels = plain
    assert inputs.shape == labels.shape == (N, L) and inputs.dtype == labels.dtype == torch.long


def test_keys_and_values_from_disjoint_halves(plain):
    inputs, _ = plain
    keys, values = inputs[:, 0 : 2 * KV : 2], inputs[:, 1 : 2 * KV : 2]
    assert ((keys >= 1) & (keys < V // 2)).all()
    assert ((values >= V // 2) & (values < V)).all()
    for row in keys:  # drawn without replacement
        assert len(set(row.tolist())) == KV


def test_each_key_queried_once_with_label_its_value(plain):
    inputs, labels = plain
    for x, y in zip(inputs, labels):
        keys, values = x[0 : 2 * KV : 2].tolist(), x[1 : 2 * KV : 2].tolist()
        region = x[2 * KV :]
        query_positions = (region != 0).nonzero().flatten() + 2 * KV
        assert sorted(x[query_positions].tolist()) == sorted(keys)  # each key exactly once
        assert ((query_positions - 2 * KV) % 2 == 0).all()  # at even offsets of the region
        labelled = (y != IGNORE_INDEX).nonzero().flatten()
        assert labelled.tolist() == sorted(query_positions.tolist())  # labels exactly at query keys
        answer = dict(zip(keys, values))
        for p in labelled.tolist():
            assert y[p].item() == answer[x[p].item()]


def test_random_non_queries_fill_only_the_gaps(plain):
    inputs, labels = multiquery_ar(V, N, L, KV, random_non_queries=True, seed=3)
    plain_inputs, plain_labels = plain
    assert torch.equal(labels, plain_labels)
    kept = plain_inputs != 0
    assert torch.equal(inputs[kept], plain_inputs[kept])
    filled = inputs[~kept]
    assert filled.min() >= 0 and filled.max() < V and filled.unique().numel() > 100


def test_gap_histogram_follows_power_law():
    """With one pair, the query slot g has p(g) ∝ a·g^(a-1); a chi-square test on 40k examples."""
    Lq, n, a = 40, 40_000, 0.01
    inputs, _ = multiquery_ar(V, n, Lq, 1, power_a=a, random_non_queries=False, seed=0)
    offsets = (inputs[:, 2:] != 0).float().argmax(1).numpy()
    assert (offsets % 2 == 0).all()
    counts = np.bincount(offsets // 2, minlength=(Lq - 2) // 2)
    expected = query_slot_probabilities((Lq - 2) // 2, a) * n
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 50, chi2  # 18 degrees of freedom: p ≈ 1e-4 at 45
    assert counts[0] > 5 * counts[-1]  # most queries come soon after the context


def test_deterministic_per_seed():
    a = multiquery_ar(V, 20, 64, 4, seed=5)
    b = multiquery_ar(V, 20, 64, 4, seed=5)
    c = multiquery_ar(V, 20, 64, 4, seed=6)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])


def test_read_twice_repeats_the_context():
    inputs, labels = multiquery_ar(V, 10, 64, 4, num_passes=2, random_non_queries=False, seed=0)
    assert torch.equal(inputs[:, :8], inputs[:, 8:16])
    assert (labels[:, :16] == IGNORE_INDEX).all() and (labels != IGNORE_INDEX).sum(1).eq(4).all()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(vocab_size=V, input_seq_len=63, num_kv_pairs=4), "even"),
        (dict(vocab_size=V, input_seq_len=64, num_kv_pairs=17), "2·num_kv_pairs·num_passes"),
        (dict(vocab_size=V, input_seq_len=64, num_kv_pairs=11, num_passes=2), "2·num_kv_pairs·num_passes"),
        (dict(vocab_size=64, input_seq_len=64, num_kv_pairs=4), "vocab_size > input_seq_len"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        multiquery_ar(num_examples=2, **kwargs)


def test_slice_names():
    assert MQARSlice(256, 16).name == "L256_kv16" and MQARSlice(64, 4, num_passes=2).name == "L64_kv4_x2"


@pytest.mark.parametrize("power_a", [0.0, -1.0])
def test_power_a_must_be_positive(power_a):
    with pytest.raises(ValueError, match="power_a must be > 0"):
        multiquery_ar(V, 2, 64, 4, power_a=power_a)


def test_empty_slice_list_is_refused():
    from recall_lm.data.mqar_datamodule import MQARDataModule

    with pytest.raises(ValueError, match="train_slices is empty"):
        MQARDataModule(vocab_size=V, train_slices=[])
