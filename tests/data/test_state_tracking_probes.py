"""The state-tracking and recall probes against hand-computed examples and independent recomputation:
parity, modular arithmetic (Python's own evaluator as the reference), group word problems (the
reference code's S3 numbering, group axioms), copying, forgetting and compositional MQAR; each trains
end to end from its config."""
import numpy as np
import pytest
import torch

from recall_lm.data.copying import CopyingSlice, copying
from recall_lm.data.modular_arithmetic import FIRST_DIGIT, ModularArithmeticSlice, encode, evaluate
from recall_lm.data.mqar_variants import compositional_mqar, forgetting_mqar
from recall_lm.data.parity import ParitySlice, parity
from recall_lm.data.word_problems import GROUPS, WordProblemSlice, multiplication_table, prefix_products
from recall_lm.models.config import IGNORE_INDEX
from recall_lm.training import cli as train_cli


def test_parity_labels_the_last_bit_with_the_count_of_twos_mod_2():
    inputs, labels = parity(200, 3, 12, seed=1)
    assert inputs.shape == labels.shape == (200, 11)
    for x, y in zip(inputs.tolist(), labels.tolist()):
        n = sum(t != 0 for t in x)
        assert 2 <= n <= 11 and all(t in (1, 2) for t in x[:n]) and not any(x[n:])
        assert [i for i, t in enumerate(y) if t != IGNORE_INDEX] == [n - 1]
        assert y[n - 1] == 1 + x[:n].count(2) % 2
    # bits 2 1 2 2: three 2s, odd -> token 2 at the last bit (Grazzi et al.'s example)
    x = torch.tensor([2, 1, 2, 2])
    assert 1 + int((x == 2).sum()) % 2 == 2
    assert ParitySlice(3, 40).seq_len == 39 and ParitySlice(40, 256).name == "parity_L40-256"


@pytest.mark.parametrize("text, value", [("1+2*3", 2), ("1-1-1", 4), ("0*1+4*3-2", 0), ("3-4*2", 0),
                                         ("(3-(-4))", 2), ("((1*(-2))+(3))", 1), ("-3", 2)])
def test_modular_arithmetic_hand_values(text, value):
    assert evaluate(list(text)) == value


@pytest.mark.parametrize("brackets, operators", [(False, "+-*"), (True, "+-*"), (True, "+-")])
def test_modular_arithmetic_answers_are_pythons(brackets, operators):
    item = ModularArithmeticSlice(1, 23, brackets, operators, num_examples=300)
    inputs, labels = item.generate(12, seed=3)
    symbols = {1: "+", 2: "-", 3: "*", 5: "(", 6: ")", **{FIRST_DIGIT + d: str(d) for d in range(5)}}
    for x, y in zip(inputs.tolist(), labels.tolist()):
        end = x.index(4)  # "="
        text = "".join(symbols[t] for t in x[:end])
        assert 1 <= end <= 23 and not any(x[end + 1 :]) and encode(list(text)) == x[:end]
        assert [i for i, t in enumerate(y) if t != IGNORE_INDEX] == [end]
        assert y[end] == FIRST_DIGIT + eval(text) % 5  # Python's precedence and unary minus
        assert set(text) <= set("01234()" + operators) and (brackets or end % 2 == 1)


def test_word_problems_follow_the_reference_numbering():
    """S3 in lexicographic order, (a·b)(i) = a(b(i)), running products (the reference code's examples)."""
    assert prefix_products("S3", np.array([[1, 2], [2, 1], [3, 3]])).tolist() == [[1, 4], [2, 3], [3, 4]]
    assert prefix_products("S3", np.array([[3, 3, 3], [1, 2, 3]])).tolist() == [[3, 4, 0], [1, 4, 0]]
    orders = {g: len(multiplication_table(g)) for g in GROUPS}
    assert orders == {"S3": 6, "S4": 24, "S5": 120, "A4": 12, "A5": 60, "A4xZ5": 60, "Z60": 60}
    for group in GROUPS:
        table = multiplication_table(group)
        n = len(table)
        assert (table[0] == np.arange(n)).all() and (table[:, 0] == np.arange(n)).all()  # 0 is the identity
        assert all(sorted(row) == list(range(n)) for row in table)  # a Latin square: inverses exist
        a, b, c = np.random.default_rng(0).integers(n, size=(3, 500))
        assert (table[table[a, b], c] == table[a, table[b, c]]).all()
    assert (multiplication_table("Z60") == multiplication_table("Z60").T).all()
    assert not (multiplication_table("A4xZ5") == multiplication_table("A4xZ5").T).all()
    inputs, labels = WordProblemSlice("A5", 9, 4).generate(60, seed=0)
    table = multiplication_table("A5")
    for x, y in zip(inputs.tolist(), labels.tolist()):
        acc = 0
        for t, element in enumerate(x):
            acc = table[acc, element]
            assert y[t] == acc


def test_copying_lays_out_the_string_twice_and_scores_the_copy():
    inputs, labels = copying(3, 3, seed=0)
    for x, y in zip(inputs.tolist(), labels.tolist()):
        s = x[1:4]
        assert x == [26, *s, 27, *s] and y == [IGNORE_INDEX] * 4 + [*s, 28]
    assert CopyingSlice(16).seq_len == 34


def test_forgetting_mqar_answers_with_the_latest_value():
    inputs, labels = forgetting_mqar(256, 50, 64, num_kv_pairs=6, num_updates=3, seed=2)
    for x, y in zip(inputs.tolist(), labels.tolist()):
        latest, seen = {}, []
        for k, v in zip(x[0:18:2], x[1:18:2]):  # 6 pairs then 3 updates
            if k in latest:
                assert v != latest[k], "an update must change the value"
            latest[k] = v
            seen.append(k)
        assert len(latest) == 6 and all(1 <= k < 128 <= v for k, v in latest.items())
        scored = [i for i, t in enumerate(y) if t != IGNORE_INDEX]
        assert sorted(x[i] for i in scored) == sorted(latest)  # every key asked once
        assert all(y[i] == latest[x[i]] for i in scored)


def test_compositional_mqar_answers_the_pair_of_keys():
    inputs, labels = compositional_mqar(300, 50, 64, num_kv_pairs=9, seed=4)
    for x, y in zip(inputs.tolist(), labels.tolist()):
        triples = [tuple(x[i : i + 3]) for i in range(0, 27, 3)]
        value = {(a, b): v for a, b, v in triples}
        firsts, seconds = {a for a, _, _ in triples}, {b for _, b, _ in triples}
        assert len(firsts) == len(seconds) == 3 and len(value) == 9  # the full 3 × 3 grid
        assert all(1 <= a < 100 <= b < 200 <= v for a, b, v in triples)
        scored = [i for i, t in enumerate(y) if t != IGNORE_INDEX]
        assert len(scored) == 9 and all(y[i] == value[(x[i - 1], x[i])] for i in scored)
    with pytest.raises(ValueError, match="perfect square"):
        compositional_mqar(300, 2, 64, num_kv_pairs=8)


@pytest.mark.parametrize("config, slices", [
    ("parity", ["{min_len: 3, max_len: 12, num_examples: 16}"]),
    ("modular_arithmetic_brackets", ["{min_len: 3, max_len: 12, brackets: true, num_examples: 16}"]),
    ("word_problems", ["{group: S3, length: 8, num_examples: 16}"]),
    ("copying", ["{length: 4, num_examples: 16}"]),
    ("forgetting_mqar", ["{input_seq_len: 32, num_kv_pairs: 2, num_updates: 1, num_examples: 16}"]),
    ("compositional_mqar", ["{input_seq_len: 32, num_kv_pairs: 4, num_examples: 16}"]),
])
def test_probe_trains_from_its_config(tmp_path, config, slices):
    cli = train_cli.main([
        "fit", "--config", str(train_cli.ROOT / f"configs/probes/{config}.yaml"),
        f"--trainer.default_root_dir={tmp_path}", "--trainer.max_steps=2", "--trainer.max_epochs=1",
        "--trainer.enable_progress_bar=false", "--trainer.enable_checkpointing=false",
        "--trainer.log_every_n_steps=1",
        "--model.architecture.d_model=16", "--data.init_args.batch_size=8",
        f"--data.init_args.train_slices=[{slices[0]}]", f"--data.init_args.test_slices=[{slices[0]}]",
    ])
    assert 0.0 <= float(cli.trainer.callback_metrics["val/acc"]) <= 1.0
