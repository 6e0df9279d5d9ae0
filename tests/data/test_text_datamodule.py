"""TextDataModule: sources, packing against a plain-Python reference, caching, order, sharding, errors."""
import json
from types import SimpleNamespace

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import recall_lm.data.text_datamodule as tdm
from recall_lm.data import corpus
from recall_lm.data.text_datamodule import TextDataModule
from recall_lm.data.tokenizers import ByteTokenizer, tokenizer_for_checkpoint

datasets.disable_progress_bars()

DOCS = [f"document {i}: " + "héllo wörld 🙂 " * (i % 5 + 1) + "end." for i in range(40)] + [""]


def write_jsonl(path, texts, column="text"):
    path.write_text("".join(json.dumps({column: t, "id": i}) + "\n" for i, t in enumerate(texts)))
    return path


def reference_blocks(texts, seq_len, eos=0):
    """Plain Python: UTF-8 bytes of every non-empty document followed by EOS, concatenated, cut in blocks."""
    stream = []
    for t in texts:
        if t:
            stream += list(t.encode("utf-8")) + [eos]
    n = len(stream) // (seq_len + 1)
    return [stream[i * (seq_len + 1) : (i + 1) * (seq_len + 1)] for i in range(n)]


def make(tmp_path, **kwargs):
    kwargs.setdefault("cache_dir", str(tmp_path / "cache"))
    kwargs.setdefault("seq_len", 16)
    kwargs.setdefault("batch_size", 4)
    dm = TextDataModule(**kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def fake_trainer(tmp_path, vocab_size=256, rank=0, world=1):
    return SimpleNamespace(lightning_module=SimpleNamespace(config=SimpleNamespace(vocab_size=vocab_size)),
                           global_rank=rank, world_size=world, default_root_dir=str(tmp_path / "run"))


def test_packing_matches_plain_python(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", DOCS)
    val = write_jsonl(tmp_path / "val.jsonl", DOCS[:10])
    dm = make(tmp_path, sources=str(train), val_sources=str(val), document_mask=False)
    expected = reference_blocks(DOCS, 16)
    assert len(dm.train_set) == len(expected)
    assert [dm.train_set.block(i).tolist() for i in range(len(expected))] == expected
    assert len(dm.val_set) == len(reference_blocks(DOCS[:10], 16))
    inputs, labels = next(iter(dm.train_dataloader()))
    assert inputs.shape == labels.shape == (4, 16) and inputs.dtype == torch.long
    assert torch.equal(inputs[:, 1:], labels[:, :-1])  # labels are the inputs shifted by one
    for row_in, row_lab in zip(inputs.tolist(), labels.tolist()):
        assert row_in + row_lab[-1:] in expected


def test_document_mask_marks_starts_and_ignores_the_next_documents_first_token(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", DOCS)
    val = write_jsonl(tmp_path / "val.jsonl", DOCS[:10])
    dm = make(tmp_path, sources=str(train), val_sources=str(val))  # document_mask is the default
    for i in range(len(dm.train_set)):
        block = dm.train_set.block(i).tolist()
        inputs, labels, starts = dm.train_set[i]
        assert inputs.tolist() == block[:-1]
        for t in range(16):  # plain Python: EOS (0 for bytes) ends a document; the next token starts one
            after_eos = t > 0 and block[t - 1] == 0
            assert bool(starts[t]) == (t == 0 or after_eos)
            assert labels[t].item() == (-100 if block[t] == 0 else block[t + 1])
    inputs, labels, starts = next(iter(dm.train_dataloader()))
    assert inputs.shape == labels.shape == starts.shape == (4, 16) and starts.dtype == torch.bool


def test_text_json_parquet_and_glob_sources(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text(DOCS[0])
    (folder / "b.md").write_text(DOCS[1])
    write_jsonl(folder / "c.jsonl", DOCS[2:20], column="body")
    pq.write_table(pa.table({"body": DOCS[20:40], "n": list(range(20))}), folder / "d.parquet")
    val = write_jsonl(tmp_path / "val.jsonl", DOCS[:10], column="body")
    # text files first, then JSON lines, then parquet (see data/text_sources.load_local)
    for sources in ([str(folder)], [str(folder / "*.txt"), str(folder / "*.md"), str(folder / "c.*"),
                                    str(folder / "d.parquet")]):
        dm = make(tmp_path, sources=sources, val_sources=str(val), text_column="body")
        stream = [t for block in reference_blocks(DOCS[:40], 16) for t in block]
        got = [t for i in range(len(dm.train_set)) for t in dm.train_set.block(i).tolist()]
        assert got == stream


def test_second_setup_reads_the_cache_and_does_not_tokenise(tmp_path, monkeypatch):
    train = write_jsonl(tmp_path / "train.jsonl", DOCS)
    first = make(tmp_path, sources=str(train), val_fraction=0.25)
    files = sorted(p.name for p in first.token_dir.iterdir())
    assert files == ["meta.json", "train.bin", "val.bin"]
    stamp = (first.token_dir / "train.bin").stat().st_mtime_ns

    def boom(*args, **kwargs):
        raise AssertionError("tokenised again")

    monkeypatch.setattr(tdm._Encode, "__call__", boom)
    monkeypatch.setattr(ByteTokenizer, "encode_batch", boom)
    second = make(tmp_path, sources=str(train), val_fraction=0.25)
    assert second.token_dir == first.token_dir
    assert (second.token_dir / "train.bin").stat().st_mtime_ns == stamp
    assert len(second.train_set) == len(first.train_set)
    write_jsonl(train, DOCS[:30])  # a changed source gets new tokens
    with pytest.raises(AssertionError, match="tokenised again"):
        make(tmp_path, sources=str(train), val_fraction=0.25)


def test_val_fraction_splits_documents(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", DOCS)
    dm = make(tmp_path, sources=str(train), val_fraction=0.3, seed=1)
    meta = json.loads((dm.token_dir / "meta.json").read_text())
    assert meta["documents"]["train"] + meta["documents"]["val"] == 40  # the empty document is dropped
    is_val = tdm.split_unit(1, torch.arange(41).numpy()) < 0.3
    expected_val = [d for d, v in zip(DOCS, is_val) if v and d]
    expected_train = [d for d, v in zip(DOCS, is_val) if not v and d]
    assert meta["documents"]["val"] == len(expected_val) and 0 < len(expected_val) < 40
    assert meta["tokens"]["val"] == sum(len(d.encode()) + 1 for d in expected_val)
    assert meta["tokens"]["train"] == sum(len(d.encode()) + 1 for d in expected_train)


def test_order_is_deterministic_and_ranks_are_disjoint(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", DOCS * 3)
    runs, indices = [], []
    for rank in (0, 1, 0):
        dm = TextDataModule(sources=str(train), val_fraction=0.2, seq_len=8, batch_size=2,
                            cache_dir=str(tmp_path / "cache"), seed=3)
        dm.trainer = fake_trainer(tmp_path, rank=rank, world=2)
        dm.prepare_data()
        dm.setup("fit")
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(1)
        runs.append([tuple(row) for inputs, *_ in loader for row in inputs.tolist()])
        indices.append(list(loader.sampler))
    assert runs[0] == runs[2] and indices[0] == indices[2]  # two instances, the same order
    assert not set(indices[0]) & set(indices[1])  # the ranks see disjoint blocks
    assert len(runs[0]) == len(runs[1]) > 0
    glob = loader.sampler.global_order(1)
    blocks = [tuple(dm.train_set[i][0].tolist()) for i in glob]
    assert runs[0] == blocks[0::2][: len(runs[0])] and runs[1] == blocks[1::2][: len(runs[1])]


def test_setup_saves_tokenizer_and_checks_the_vocabulary(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", DOCS)
    dm = TextDataModule(sources=str(train), val_fraction=0.3, seq_len=16, cache_dir=str(tmp_path / "cache"))
    dm.trainer = fake_trainer(tmp_path)
    dm.setup("fit")
    assert tokenizer_for_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt").name == "byte"
    small = TextDataModule(
        sources=str(train), val_fraction=0.3, seq_len=16, cache_dir=str(tmp_path / "cache")
    )
    small.trainer = fake_trainer(tmp_path, vocab_size=200)
    with pytest.raises(ValueError, match="vocab_size 200 .* 256"):
        small.setup("fit")


def test_bpe_option_is_trained_once_and_cached(tmp_path, monkeypatch):
    train = write_jsonl(tmp_path / "train.jsonl", DOCS * 2)
    dm = make(tmp_path, sources=str(train), val_fraction=0.2, tokenizer="bpe:300")
    assert dm.tokenizer.name == "bpe:300" and dm.tokenizer.vocab_size <= 300
    block = dm.train_set.block(0).tolist()
    assert dm.tokenizer.eos_token_id in block or len(dm.train_set) > 0
    monkeypatch.setattr(
        tdm, "train_bpe", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained again"))
    )
    again = make(tmp_path, sources=str(train), val_fraction=0.2, tokenizer="bpe:300")
    assert again.tokenizer.fingerprint == dm.tokenizer.fingerprint


def test_clear_errors(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", DOCS)
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        make(tmp_path, sources=str(tmp_path / "nope.jsonl"))
    with pytest.raises(FileNotFoundError, match=r"missing/\*.txt"):
        make(tmp_path, sources=str(tmp_path / "missing" / "*.txt"))
    (tmp_path / "table.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="table.csv"):
        make(tmp_path, sources=str(tmp_path / "table.csv"))
    with pytest.raises(ValueError, match="'body'.*good.jsonl"):
        make(tmp_path, sources=str(good), text_column="body")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match="empty corpus.*empty.jsonl"):
        make(tmp_path, sources=str(tmp_path / "empty.jsonl"))
    write_jsonl(tmp_path / "blank.jsonl", ["", ""])
    with pytest.raises(ValueError, match="empty corpus.*blank.jsonl"):
        make(tmp_path, sources=str(tmp_path / "blank.jsonl"), val_sources=str(good))
    with pytest.raises(ValueError, match="tokenizer"):
        make(tmp_path, sources=str(good), tokenizer="no-such-tokenizer!")
    with pytest.raises(ValueError, match="either sources"):
        TextDataModule(sources=str(good), hub_dataset="x/y")
    with pytest.raises(ValueError, match="cannot load hub dataset 'surely/not-a-dataset-xyz'"):
        make(tmp_path, hub_dataset="surely/not-a-dataset-xyz")


@pytest.mark.parametrize(
    "bad_line, why", [(b'{"text": "caf\xe9"}\n', "not UTF-8"), (b'{"text": "x"\n', "not JSON")]
)
def test_a_bad_line_of_a_json_lines_corpus_is_named(tmp_path, bad_line, why):
    """datasets only says 'An error occurred while generating the dataset'; the error names file and line."""
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b'{"text": "one"}\n{"text": "two"}\n' + bad_line + b'{"text": "four"}\n')
    with pytest.raises(ValueError, match=rf"cannot read json files .*corpus.jsonl:3: {why}"):
        make(tmp_path, sources=str(path))


def test_builtin_corpus_is_deterministic_with_a_fixed_validation_part(tmp_path):
    root = tmp_path / "stdlib"
    for rel in ["os.py", "json/__init__.py", "json/decoder.py", "test/test_os.py", "site-packages/x.py",
                *[f"pkg/m{i}.py" for i in range(60)]]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"# {rel}\nx = 1\n")
    names = [rel for rel, _ in corpus.stdlib_files(root)]
    assert names == sorted(names) and "test/test_os.py" not in names and "site-packages/x.py" not in names
    out = corpus.build_stdlib_corpus(tmp_path / "cache", root)
    again = corpus.build_stdlib_corpus(tmp_path / "cache2", root)
    assert out["train"].read_text() == again["train"].read_text()
    val = [json.loads(line)["path"] for line in out["val"].read_text().splitlines()]
    train = [json.loads(line)["path"] for line in out["train"].read_text().splitlines()]
    assert sorted(val + train) == names and val and all(corpus.is_validation(p) for p in val)
    assert not any(corpus.is_validation(p) for p in train)


@pytest.mark.slow
def test_python_stdlib_default_corpus(tmp_path):
    dm = make(tmp_path, seq_len=256, batch_size=8)
    assert len(dm.train_set) > 10_000 and len(dm.val_set) > 100
    inputs, labels, starts = next(iter(dm.train_dataloader()))
    assert inputs.shape == labels.shape == starts.shape == (8, 256)


@pytest.mark.parametrize("streaming", [False, True])
def test_hub_path_with_a_local_stand_in(tmp_path, monkeypatch, streaming):
    """The hub code path (map or streaming) on a local dataset standing in for load_dataset; max_tokens
    caps."""
    docs = datasets.load_dataset(
        "json",
        data_files=str(write_jsonl(tmp_path / "d.jsonl", DOCS)),
        split="train",
        cache_dir=str(tmp_path / "hf"),
    ).select_columns(["text"])
    calls = []

    def fake_load_hub(path, name, split, text_column, streaming, cache_dir, revision):
        calls.append((path, name, split, streaming))
        return docs.to_iterable_dataset() if streaming else docs

    monkeypatch.setattr(tdm, "load_hub", fake_load_hub)
    dm = make(tmp_path, hub_dataset="org/corpus", hub_config="cfg", streaming=streaming, val_fraction=0.3,
              max_tokens=500)
    assert calls[0] == ("org/corpus", "cfg", "train", streaming)
    is_val = tdm.split_unit(0, torch.arange(len(DOCS)).numpy()) < 0.3
    stream = [t for d, v in zip(DOCS, is_val) if d and not v for t in list(d.encode()) + [0]][:500]
    got = [t for i in range(len(dm.train_set)) for t in dm.train_set.block(i).tolist()]
    assert got == stream[: len(got)] and len(got) == 500 // 17 * 17
