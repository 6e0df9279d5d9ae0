"""JRT set disjointness: one shared element, the label; sets, separators and passes as documented."""
import pytest

from recall_lm.data.probe_datamodule import SetDisjointnessDataModule
from recall_lm.data.set_disjointness import (
    ANSWER,
    IGNORE_INDEX,
    SEP,
    SetDisjointnessSlice,
    set_disjointness,
    set_disjointness_length,
)

V = 256


@pytest.mark.parametrize("a,b,p", [(4, 16, 1), (16, 4, 1), (4, 16, 2), (1, 1, 3), (7, 9, 2)])
def test_sets_share_exactly_the_labelled_element(a, b, p):
    inputs, labels = set_disjointness(V, 50, a, b, p, seed=2)
    L = p * (a + b + 2)
    assert inputs.shape == labels.shape == (50, L) == (50, set_disjointness_length(a, b, p))
    for x, y in zip(inputs.tolist(), labels.tolist()):
        assert [i for i, t in enumerate(y) if t != IGNORE_INDEX] == [L - 1]
        assert x[-1] == ANSWER
        context = x[: a + b + 1]
        for k in range(p):  # every pass is the same context, passes separated by SEP
            assert x[k * (a + b + 2) : k * (a + b + 2) + a + b + 1] == context
            if k < p - 1:
                assert x[k * (a + b + 2) + a + b + 1] == SEP
        set_a, set_b = context[:a], context[a + 1 :]
        assert context[a] == SEP and len(set_b) == b
        assert len(set(set_a)) == a and len(set(set_b)) == b  # sets: no repeats
        assert all(3 <= t < V for t in set_a + set_b)
        assert set(set_a) & set(set_b) == {y[-1]}


def test_common_element_position_is_spread():
    inputs, labels = set_disjointness(V, 400, 8, 8, seed=0)
    positions = {row.tolist().index(label) for row, label in zip(inputs, labels[:, -1])}
    assert positions == set(range(8))  # the shared element is not always first in A


def test_bad_arguments():
    with pytest.raises(ValueError, match="size_a"):
        set_disjointness(V, 2, 0, 4)
    with pytest.raises(ValueError, match="distinct elements"):
        set_disjointness(16, 2, 10, 10)


def test_datamodule_batches_and_names():
    slices = [SetDisjointnessSlice(4, 16, 1, 64), SetDisjointnessSlice(16, 4, 2, 64)]
    dm = SetDisjointnessDataModule(V, slices, slices, batch_size=32)
    dm.setup()
    assert dm.val_slice_names == ["sd_A4_B16", "sd_A16_B4_x2"]
    shapes = {tuple(x.shape) for x, _ in dm.train_dataloader()}
    assert shapes == {(32, 22), (32, 44)}
