"""Passkey generator: the key where the depth says, exact lengths, labels only on the answer."""
import pytest
import torch

from recall_lm.data.passkey import (
    IGNORE_INDEX,
    KEY_MARK,
    QUERY_MARK,
    TEXT_QUESTION,
    PasskeySlice,
    key_start,
    passkey_sentence,
    passkey_text_prompt,
    passkey_tokens,
)
from recall_lm.data.probe_datamodule import PasskeyDataModule
from recall_lm.data.tokenizers import load_tokenizer

V = 512


@pytest.mark.parametrize("L,n", [(64, 4), (33, 1), (130, 5)])
@pytest.mark.parametrize("depth", [0.0, 0.3, 0.5, 1.0])
def test_layout_depth_lengths_labels(L, n, depth):
    inputs, labels = passkey_tokens(V, 16, L, depth, key_len=n, seed=1)
    assert inputs.shape == labels.shape == (16, L)
    filler = L + 1 - 2 * (n + 1)
    expected_start = round(depth * filler)
    for x, y in zip(inputs, labels):
        x, y = x.tolist(), y.tolist()
        full = x + [y[-1]]  # the L + 1 tokens of the example
        assert full.count(KEY_MARK) == 1 and full.count(QUERY_MARK) == 1
        m, q = full.index(KEY_MARK), full.index(QUERY_MARK)
        assert m == expected_start == key_start(L, n, depth)
        key = full[m + 1 : m + 1 + n]
        assert full[q + 1 :] == key and q == L - n  # question, then the key, at the very end
        assert all(V // 2 <= k < V for k in key)
        filler_tokens = full[:m] + full[m + 1 + n : q]
        assert len(filler_tokens) == filler and all(3 <= t < V // 2 for t in filler_tokens)
        scored = [i for i, t in enumerate(y) if t != IGNORE_INDEX]
        assert scored == list(range(L - n, L)) and [y[i] for i in scored] == key
        assert [x[i] for i in scored] == [QUERY_MARK] + key[
            :-1
        ]  # each answer token predicted from the one before


def test_depth_extremes_and_repeat_filler():
    x0, _ = passkey_tokens(V, 4, 64, 0.0, key_len=4)
    x1, _ = passkey_tokens(V, 4, 64, 1.0, key_len=4)
    assert (x0[:, 0] == KEY_MARK).all()
    assert (x1[:, 64 - 4 - 5] == KEY_MARK).all()  # the key block (mark + 4), then QUERY_MARK
    assert (x1[:, 64 - 4] == QUERY_MARK).all()
    rep, _ = passkey_tokens(V, 3, 64, 0.0, key_len=4, filler="repeat")
    filler = rep[:, 5 : 64 - 4]
    assert (filler == filler[0]).all()  # the same phrase in every example
    assert torch.equal(filler[0, :8], filler[0, 8:16])  # a repeated phrase of 8 tokens


@pytest.mark.parametrize("kwargs,word", [
    (dict(seq_len=8, key_len=4), "seq_len"), (dict(depth=1.5), "depth"), (dict(key_len=0), "key_len"),
    (dict(filler="text"), "filler"),
])
def test_bad_arguments(kwargs, word):
    args = dict(vocab_size=V, num_examples=2, seq_len=64, depth=0.5, key_len=4) | kwargs
    with pytest.raises(ValueError, match=word):
        passkey_tokens(**args)


def test_slice_with_random_depths_and_datamodule():
    inputs, labels = PasskeySlice(64, None, 4, 320).generate(V, seed=5)
    starts = {(row == KEY_MARK).nonzero().item() for row in inputs}
    assert inputs.shape == (320, 64) and len(starts) > 5  # many depths
    dm = PasskeyDataModule(V, [PasskeySlice(64, None, 4, 128)], [PasskeySlice(64, 0.5, 4, 32)], batch_size=16)
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 64) and (y != IGNORE_INDEX).sum(-1).eq(4).all()
    assert dm.val_slice_names == ["pk_L64_d0.5"]


def test_text_prompt_length_depth_and_question():
    tok = load_tokenizer("byte")
    for depth in (0.0, 0.5, 1.0):
        ids = passkey_text_prompt(tok, 2000, depth, 48213)
        text = tok.decode(ids)
        assert 1500 < len(ids) <= 2000
        assert text.endswith(TEXT_QUESTION) and passkey_sentence(48213) in text
        where = text.index(passkey_sentence(48213)) / len(text)
        assert abs(where - depth) < 0.15
