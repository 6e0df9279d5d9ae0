"""Tokenizers: round trips, EOS, BPE training, save/load, the tokenizer found beside a checkpoint, errors."""
import pytest

from recall_lm.data.tokenizers import (
    ByteTokenizer,
    Tokenizer,
    default_rwkv_vocab_file,
    load_saved_tokenizer,
    load_tokenizer,
    tokenizer_for_checkpoint,
    train_bpe,
)

TEXTS = [
    "Hello, world!",
    "Grüße aus Köln — naïve café, 你好世界, こんにちは, Привет, 🙂🚀 and \t tabs\n\nnewlines",
    "def f(x):\n    return x ** 2  # ≤ ∑ ∫\n",
    "",
    " leading space and trailing space ",
]


@pytest.fixture(scope="module")
def rwkv():
    return load_tokenizer("rwkv_world")


def test_byte_round_trip_and_ids():
    tok = load_tokenizer("byte")
    assert (tok.vocab_size, tok.eos_token_id, tok.name) == (256, 0, "byte")
    for text in TEXTS:
        ids = tok.encode(text)
        assert ids == list(text.encode("utf-8"))  # independent: the UTF-8 bytes
        assert tok.decode(ids) == text
    assert tok.encode_batch(TEXTS) == [tok.encode(t) for t in TEXTS]
    assert 0 not in tok.encode("".join(TEXTS))  # EOS never occurs in ordinary text
    assert tok.decode([0xC3]) == "\ufffd"  # broken UTF-8 is replaced, not raised


def greedy_longest_match(data: bytes, vocab: dict[bytes, int]) -> list[int]:
    """Reference: at each position take the longest vocabulary entry (brute force over lengths)."""
    longest, ids, i = max(map(len, vocab)), [], 0
    while i < len(data):
        n = next(n for n in range(min(longest, len(data) - i), 0, -1) if data[i : i + n] in vocab)
        ids.append(vocab[data[i : i + n]])
        i += n
    return ids


def test_rwkv_world_round_trip_is_greedy_longest_match(rwkv):
    assert (rwkv.vocab_size, rwkv.eos_token_id) == (65536, 0)
    assert len(rwkv.id_to_bytes) == 65529 and min(rwkv.id_to_bytes) == 1  # id 0 is free: the EOS
    vocab = {b: i for i, b in rwkv.id_to_bytes.items()}
    for text in TEXTS:
        ids = rwkv.encode(text)
        assert ids == greedy_longest_match(text.encode("utf-8"), vocab)
        assert rwkv.decode(ids) == text
        assert 0 not in ids and all(0 < i < rwkv.vocab_size for i in ids)
    assert len(rwkv.encode("hello world")) < len("hello world")  # merges, not bytes


@pytest.mark.slow
def test_rwkv_world_matches_the_rwkv_package(rwkv):
    from rwkv.rwkv_tokenizer import TRIE_TOKENIZER

    reference = TRIE_TOKENIZER(str(default_rwkv_vocab_file()))
    for text in TEXTS + [open(__file__, encoding="utf-8").read()]:
        assert rwkv.encode(text) == reference.encode(text)


def test_bpe_training_round_trip_and_eos(tmp_path):
    corpus = ["the cat sat on the mat. " * 20, "the dog sat on the log. " * 20, "ünïcödé 🙂 " * 5]
    tok = train_bpe(iter(corpus), 300)
    assert (
        257 < tok.vocab_size <= 300 and tok.eos_token_id == 0
    )  # training stops when no pair is left to merge
    for text in TEXTS + corpus:
        assert tok.decode(tok.encode(text)) == text
    assert len(tok.encode("the cat sat on the mat.")) < len("the cat sat on the mat.")
    assert tok.eos_token_id not in tok.encode(" ".join(TEXTS))
    assert tok.decode(tok.encode("a") + [tok.eos_token_id]) == "a<|endoftext|>"
    with pytest.raises(ValueError, match="vocab_size"):
        train_bpe(corpus, 100)


@pytest.mark.parametrize("spec", ["byte", "rwkv_world", "bpe"])
def test_save_and_load_saved_round_trip(spec, tmp_path, rwkv):
    tok = {"byte": ByteTokenizer(), "rwkv_world": rwkv, "bpe": train_bpe(["abcabcabd " * 50], 270)}[spec]
    tok.save(tmp_path / "tok")
    again = load_saved_tokenizer(tmp_path / "tok")
    assert type(again) is type(tok)
    assert (again.vocab_size, again.eos_token_id, again.name) == (tok.vocab_size, tok.eos_token_id, tok.name)
    assert again.fingerprint == tok.fingerprint
    if spec == "rwkv_world":  # the same vocabulary (encoding it again would only rebuild the same trie)
        assert again.id_to_bytes == tok.id_to_bytes
        return
    for text in TEXTS:
        assert again.encode(text) == tok.encode(text)
    assert load_tokenizer(str(tmp_path / "tok")).encode("abc") == tok.encode(
        "abc"
    )  # a saved folder is a spec too


def test_tokenizer_json_path(tmp_path):
    bpe = train_bpe(["hello there " * 30], 280)
    bpe.tokenizer.save(str(tmp_path / "tokenizer.json"))
    tok = load_tokenizer(str(tmp_path / "tokenizer.json"))
    assert tok.eos_token_id == 0 and tok.encode("hello") == bpe.encode("hello")
    assert load_tokenizer(str(tmp_path)).vocab_size == bpe.vocab_size  # the folder holding tokenizer.json


def test_tokenizer_for_checkpoint(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert tokenizer_for_checkpoint(run / "checkpoints" / "last.ckpt") is None
    ByteTokenizer().save(run / "tokenizer")
    for where in (run / "checkpoints" / "last.ckpt", run, run / "checkpoints"):
        found = tokenizer_for_checkpoint(where)
        assert isinstance(found, Tokenizer) and found.name == "byte"


def test_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="byte.*rwkv_world"):
        load_tokenizer("not a tokenizer!")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_tokenizer(str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="could not be loaded from the HF hub"):
        load_tokenizer("surely-not-a-cached-hub-tokenizer-xyz")  # offline in tests (conftest)
    with pytest.raises(ValueError, match="bpe"):
        load_tokenizer("bpe:512")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        load_tokenizer(str(tmp_path / "bad.json"))
    with pytest.raises(FileNotFoundError, match="no saved tokenizer"):
        load_saved_tokenizer(tmp_path)
