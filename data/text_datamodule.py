"""TextDataModule: documents → tokens (HF ``datasets.map``, cached) → EOS-joined stream → fixed blocks.

Pipeline (``prepare_data`` on one process per node, ``setup`` on every rank):

1. documents: local files / globs / folders (text, JSON lines, parquet), the built-in
   ``python-stdlib`` corpus (``data/corpus.py``), or an HF hub dataset (optionally streamed);
2. train/validation split by document: a separate source when given, else document ``i`` goes to
   validation when ``u(seed, i) < val_fraction`` (``u`` a fixed hash of the index to [0, 1));
3. tokenisation with ``datasets.map`` (batched, ``num_proc`` processes, Arrow cache under
   ``cache_dir``); each non-empty document becomes its ids followed by the tokenizer's EOS;
4. the ids of each split are concatenated into one flat token file
   ``<cache_dir>/tokens/<key>/{train,val}.bin`` whose key hashes the sources (paths, sizes, mtimes or
   hub name), column, tokenizer and split settings — a second run with the same settings reads the
   files and tokenises nothing;
5. block ``i`` is tokens ``[i·(T+1), (i+1)·(T+1))`` (the tail shorter than a block is dropped), and
   a batch is ``(input_ids [B, T], labels [B, T])`` with ``labels[:, t] = input_ids[:, t + 1]`` of the
   block, as ``recall_lm.training.task.LanguageModelTask`` expects;
6. with ``document_mask`` (the default) a batch also carries ``starts [B, T]`` (bool: a document
   begins here: the block's first token and every token after an EOS), and the label after each EOS
   (the next document's first token) is -100. The task then runs the B blocks as one packed row of
   documents (``DecoderLM(..., cu_seqlens=...)``): no token attends to, or is carried in a state
   from, another document — document-masked packing, as fla / flame train.

The train loader is a ``recall_lm.data.resumable.ResumableDataLoader``: its order depends only on
(seed, epoch), it is sharded by rank, and a run resumed mid-epoch continues where it stopped.
In ``setup`` the tokenizer is saved to ``<trainer.default_root_dir>/tokenizer/`` (rank 0) so that
``recall_lm.data.tokenizers.tokenizer_for_checkpoint`` finds it beside the checkpoints.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from recall_lm.data import corpus as builtin_corpus
from recall_lm.data.resumable import resumable_loader
from recall_lm.data.text_sources import as_list, files_fingerprint, load_hub, load_local, resolve_files
from recall_lm.data.tokenizers import Tokenizer, load_saved_tokenizer, load_tokenizer, train_bpe
from recall_lm.models.config import IGNORE_INDEX

CACHE_VERSION = 1
BUILTIN = builtin_corpus.NAME  # "python-stdlib"


def split_unit(seed: int, index: np.ndarray) -> np.ndarray:
    """A fixed hash of (seed, document index) to [0, 1) (splitmix64), the same for every run and machine."""
    with np.errstate(over="ignore"):
        z = np.asarray(index, dtype=np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


class PackedBlocks(Dataset):
    """Blocks of ``block_len`` consecutive tokens of a flat token file; item i → (input_ids [T], labels [T]).

    ``T = block_len - 1``; labels are the inputs shifted by one token. With ``eos_token_id`` (document
    masking) item i → (input_ids, labels, starts [T] bool): starts at 0 and after every EOS, and the label
    after each EOS set to -100 (a document never predicts the next one's first token). The file is
    memory-mapped lazily (per DataLoader worker).
    """

    def __init__(self, path: str | os.PathLike, dtype: str, block_len: int, limit: int | None = None,
                 eos_token_id: int | None = None):
        self.path, self.dtype, self.block_len = str(path), np.dtype(dtype), int(block_len)
        self.eos_token_id = eos_token_id
        n_tokens = os.path.getsize(self.path) // self.dtype.itemsize
        self.n_blocks = n_tokens // self.block_len
        if limit is not None:
            self.n_blocks = min(self.n_blocks, int(limit))
        self._tokens = None

    def __len__(self) -> int:
        return self.n_blocks

    def block(self, i: int) -> torch.Tensor:
        """The raw block i: [block_len] int64."""
        if not 0 <= i < self.n_blocks:
            raise IndexError(f"block {i} out of range 0..{self.n_blocks - 1}")
        if self._tokens is None:
            self._tokens = np.memmap(self.path, dtype=self.dtype, mode="r")
        start = i * self.block_len
        return torch.from_numpy(self._tokens[start : start + self.block_len].astype(np.int64))

    def __getitem__(self, i: int):
        block = self.block(i)
        input_ids, labels = block[:-1], block[1:]
        if self.eos_token_id is None:
            return input_ids, labels
        ends = input_ids == self.eos_token_id
        starts = torch.cat([torch.ones(1, dtype=torch.bool), ends[:-1]])
        return input_ids, labels.masked_fill(ends, IGNORE_INDEX), starts

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_tokens"} | {"_tokens": None}


class _Encode:
    """``datasets.map`` function: texts → ids + [EOS] (empty documents dropped), with the split flag."""

    def __init__(self, tokenizer: Tokenizer, val_fraction: float, seed: int, all_val: bool | None):
        self.tokenizer, self.val_fraction, self.seed, self.all_val = tokenizer, val_fraction, seed, all_val

    def __call__(self, batch, indices):
        keep = [i for i, t in enumerate(batch["text"]) if t]
        encoded = self.tokenizer.encode_batch([batch["text"][i] for i in keep])
        eos = self.tokenizer.eos_token_id
        if self.all_val is None:
            is_val = split_unit(self.seed, np.asarray([indices[i] for i in keep])) < self.val_fraction
        else:
            is_val = np.full(len(keep), self.all_val)
        return {"ids": [ids + [eos] for ids in encoded], "is_val": [bool(v) for v in is_val]}


class _StreamWriter:
    """Appends token ids to ``<folder>/<split>.bin`` temp files; ``close`` renames them into place."""

    def __init__(self, folder: Path, dtype: np.dtype, limits: dict[str, int | None]):
        self.folder, self.dtype, self.limits = folder, dtype, limits
        self.tmp = {s: folder / f".{s}.bin.{os.getpid()}.tmp" for s in limits}
        self.files = {s: open(p, "wb") for s, p in self.tmp.items()}
        self.counts = {s: 0 for s in limits}

    def full(self, split: str) -> bool:
        return self.limits[split] is not None and self.counts[split] >= self.limits[split]

    def write(self, split: str, ids: np.ndarray) -> None:
        if self.full(split) or ids.size == 0:
            return
        if self.limits[split] is not None:
            ids = ids[: self.limits[split] - self.counts[split]]
        ids.astype(self.dtype, copy=False).tofile(self.files[split])
        self.counts[split] += int(ids.size)

    def close(self) -> None:
        for split, f in self.files.items():
            f.close()
            os.replace(self.tmp[split], self.folder / f"{split}.bin")


class TextDataModule(L.LightningDataModule):
    """Packed next-token batches from local text files, the built-in corpus, or an HF hub dataset.

    Args:
        sources: files, folders or glob patterns (``.txt/.md/.py/...`` = one document per file,
            ``.jsonl/.json`` and ``.parquet`` = one document per row), or ``"python-stdlib"`` (the
            default when no hub dataset is given: the standard library's sources, with its own
            fixed validation files).
        val_sources: separate validation files (else ``val_fraction`` of the documents).
        hub_dataset, hub_config, hub_split, hub_val_split, hub_revision: an HF hub dataset instead
            of ``sources`` (``load_dataset(hub_dataset, hub_config, split=hub_split)``).
        streaming: stream the hub dataset (only the documents needed for ``max_tokens`` are read).
        format: ``auto`` (by suffix), ``text``, ``json`` or ``parquet``.
        text_column: the column holding the text in JSON-lines, parquet and hub data.
        tokenizer: a ``recall_lm.data.tokenizers.load_tokenizer`` spec, or ``bpe:<vocab_size>`` to train a
            byte-level BPE on the training documents (cached).
        seq_len: tokens per training sequence T (blocks hold T + 1 tokens).
        batch_size / val_batch_size: sequences per batch per device.
        val_fraction: share of documents held out when there is no separate validation source.
        max_val_blocks: cap on validation sequences (None: all).
        max_tokens / max_val_tokens: stop tokenising a split after this many tokens (None: all).
        seed: the document split and the training order (epoch e uses permutation seed + e).
        num_proc: processes for ``datasets.map`` (None: one).
        num_workers: DataLoader workers.
        cache_dir: where the corpus, Arrow caches, tokens and trained tokenizers go
            (default ``$RECALL_LM_CACHE`` or ``~/.cache/recall-lm``).
        document_mask: batches carry where documents start, so that each document of a block is its own
            sequence (step 6 above); False packs across document boundaries with no masking.
    """

    def __init__(
        self,
        sources: str | list[str] | None = None,
        val_sources: str | list[str] | None = None,
        hub_dataset: str | None = None,
        hub_config: str | None = None,
        hub_split: str = "train",
        hub_val_split: str | None = None,
        hub_revision: str | None = None,
        streaming: bool = False,
        format: str = "auto",
        text_column: str = "text",
        tokenizer: str = "byte",
        seq_len: int = 512,
        batch_size: int = 16,
        val_batch_size: int | None = None,
        val_fraction: float = 0.01,
        max_val_blocks: int | None = None,
        max_tokens: int | None = None,
        max_val_tokens: int | None = None,
        seed: int = 0,
        num_proc: int | None = None,
        num_workers: int = 0,
        cache_dir: str | None = None,
        document_mask: bool = True,
    ):
        super().__init__()
        if hub_dataset and sources:
            raise ValueError("TextDataModule: give either sources (local files) or hub_dataset, not both")
        if not hub_dataset and sources is None:
            sources = BUILTIN
        if not 0 <= val_fraction < 1:
            raise ValueError(f"TextDataModule: val_fraction must be in [0, 1), got {val_fraction}")
        if seq_len < 1 or batch_size < 1:
            raise ValueError(
                f"TextDataModule: seq_len and batch_size must be ≥ 1, got {seq_len}, {batch_size}"
            )
        if streaming and not hub_dataset:
            raise ValueError("TextDataModule: streaming applies to hub_dataset only")
        self.sources, self.val_sources = as_list(sources), as_list(val_sources)
        self.hub = dict(path=hub_dataset, name=hub_config, split=hub_split, val_split=hub_val_split,
                        revision=hub_revision, streaming=bool(streaming))
        self.format, self.text_column, self.tokenizer_spec = format, text_column, tokenizer
        self.seq_len, self.batch_size = int(seq_len), int(batch_size)
        self.val_batch_size = int(val_batch_size or batch_size)
        self.val_fraction, self.max_val_blocks = float(val_fraction), max_val_blocks
        self.max_tokens, self.max_val_tokens = max_tokens, max_val_tokens
        self.seed, self.num_proc, self.num_workers = int(seed), num_proc, int(num_workers)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else builtin_corpus.default_cache_dir()
        self.document_mask = bool(document_mask)
        self.tokenizer: Tokenizer | None = None
        self.token_dir: Path | None = None
        self.train_set = self.val_set = None

    # ---- sources ---------------------------------------------------------------------------------

    @property
    def val_slice_names(self) -> list[str]:
        return ["text"]

    def _local_files(self) -> tuple[list[Path], list[Path]]:
        """(train files, validation files), the built-in corpus expanded; validates every source."""
        train_entries, val_entries = list(self.sources), list(self.val_sources)
        if BUILTIN in train_entries:
            built = builtin_corpus.build_stdlib_corpus(self.cache_dir)
            train_entries = [str(built["train"]) if e == BUILTIN else e for e in train_entries]
            if not val_entries:
                val_entries = [str(built["val"])]
        val_entries = [str(builtin_corpus.build_stdlib_corpus(self.cache_dir)["val"]) if e == BUILTIN else e
                       for e in val_entries]
        train = resolve_files(train_entries, "TextDataModule.sources", self.format)
        val = resolve_files(val_entries, "TextDataModule.val_sources", self.format) if val_entries else []
        return train, val

    def _source_identity(self) -> dict:
        if self.hub["path"]:
            return {"hub": self.hub}
        train, val = self._local_files()
        return {"train": files_fingerprint(train), "val": files_fingerprint(val) if val else None,
                "format": self.format}

    def _documents(self, which: str):
        """The ``text``-column dataset of the train or separate-validation documents (None if there is
        none)."""
        hf_cache = str(self.cache_dir / "hf")
        if self.hub["path"]:
            split = self.hub["split"] if which == "train" else self.hub["val_split"]
            if split is None:
                return None
            return load_hub(
                self.hub["path"],
                self.hub["name"],
                split,
                self.text_column,
                self.hub["streaming"],
                hf_cache,
                self.hub["revision"],
            )
        train, val = self._local_files()
        files = train if which == "train" else val
        return load_local(files, self.text_column, self.format, hf_cache) if files else None

    def _has_separate_val(self) -> bool:
        return bool(self.hub["val_split"]) if self.hub["path"] else bool(self._local_files()[1])

    # ---- tokenizer -------------------------------------------------------------------------------

    def _load_or_train_tokenizer(self, identity: dict) -> Tokenizer:
        spec = self.tokenizer_spec
        if not (isinstance(spec, str) and spec.startswith("bpe:")):
            return load_tokenizer(spec)
        try:
            vocab = int(spec.split(":", 1)[1])
        except ValueError:
            raise ValueError(
                f"TextDataModule.tokenizer {spec!r}: expected bpe:<vocab_size>, e.g. bpe:4096"
            ) from None
        key = _hash({"v": CACHE_VERSION, "vocab": vocab, "sources": identity, "column": self.text_column,
                     "split": self._split_identity(), "max_tokens": self.max_tokens})
        folder = self.cache_dir / "tokenizers" / f"bpe-{vocab}-{key}"
        if (folder / "recall_lm_tokenizer.json").is_file():
            return load_saved_tokenizer(folder)
        tokenizer = train_bpe(self._train_texts(), vocab)
        tmp = folder.with_name(folder.name + f".{os.getpid()}.tmp")
        tokenizer.save(tmp)
        os.makedirs(folder.parent, exist_ok=True)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process got there first
            pass
        return load_saved_tokenizer(folder)

    def _train_texts(self):
        """The training documents' texts, in order (validation documents excluded), for BPE training."""
        docs = self._documents("train")
        separate = self._has_separate_val()
        budget = self.max_tokens * 4 if self.max_tokens else None  # ~4 characters a token is plenty
        seen = 0
        for start, batch in _text_batches(docs):
            texts = batch
            if not separate:
                keep = split_unit(self.seed, np.arange(start, start + len(texts))) >= self.val_fraction
                texts = [t for t, k in zip(texts, keep) if k]
            for t in texts:
                if t:
                    yield t
                    seen += len(t)
            if budget is not None and seen >= budget:
                return

    def _split_identity(self) -> dict:
        return {"val_fraction": self.val_fraction, "seed": self.seed}

    # ---- tokens on disk ----------------------------------------------------------------------------

    def _prepare(self) -> None:
        identity = self._source_identity()
        self.tokenizer = self._load_or_train_tokenizer(identity)
        key = _hash({"v": CACHE_VERSION, "sources": identity, "column": self.text_column,
                     "tokenizer": self.tokenizer.fingerprint, "split": self._split_identity(),
                     "max_tokens": self.max_tokens, "max_val_tokens": self.max_val_tokens})
        self.token_dir = self.cache_dir / "tokens" / key
        if not (self.token_dir / "meta.json").is_file():
            self._tokenize_to(self.token_dir)

    def _tokenize_to(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        tokenizer = self.tokenizer
        dtype = np.dtype(np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32)
        writer = _StreamWriter(folder, dtype, {"train": self.max_tokens, "val": self.max_val_tokens})
        separate = self._has_separate_val()
        documents = {"train": 0, "val": 0}
        for which in ("train", "val") if separate else ("train",):
            docs = self._documents(which)
            all_val = (which == "val") if separate else None
            encode = _Encode(tokenizer, self.val_fraction, self.seed, all_val)
            if self.hub["streaming"]:
                batches = self._encode_stream(docs, encode)
            else:
                fingerprint = _hash({"docs": docs._fingerprint, "tok": tokenizer.fingerprint,
                                     "split": self._split_identity(), "all_val": all_val, "v": CACHE_VERSION})
                import datasets

                features = datasets.Features({"ids": datasets.List(datasets.Value("int32")),
                                              "is_val": datasets.Value("bool")})
                encoded = docs.map(
                    encode,
                    batched=True,
                    with_indices=True,
                    batch_size=1000,
                    remove_columns=["text"],
                    num_proc=self.num_proc,
                    new_fingerprint=fingerprint,
                    features=features,
                    desc=f"tokenising ({tokenizer.name})",
                )
                batches = (b for b in encoded.with_format("arrow").iter(batch_size=10_000))
            for table in batches:
                ids = table.column("ids").combine_chunks()
                is_val = table.column("is_val").to_numpy(zero_copy_only=False).astype(bool)
                owner = np.repeat(is_val, ids.value_lengths().to_numpy())
                flat = ids.flatten().to_numpy()
                writer.write("train", flat[~owner])
                writer.write("val", flat[owner])
                documents["val"] += int(is_val.sum())
                documents["train"] += int((~is_val).sum())
                if which == "val" and writer.full("val"):
                    break
                if which == "train" and writer.full("train") and (
                        separate or self.max_val_tokens is None or writer.full("val")):
                    break
        writer.close()
        where = self._describe_sources()
        if writer.counts["train"] < self.seq_len + 1:
            raise ValueError(
                f"empty corpus: {where} gave {writer.counts['train']} training tokens, fewer than one "
                f"block of seq_len + 1 = {self.seq_len + 1}"
            )
        if writer.counts["val"] < self.seq_len + 1:
            raise ValueError(
                f"{where}: the validation part has {writer.counts['val']} tokens, fewer than one block "
                f"of {self.seq_len + 1}; raise val_fraction or give val_sources"
            )
        meta = {
            "dtype": dtype.name,
            "tokens": writer.counts,
            "documents": documents,
            "tokenizer": tokenizer.name,
            "vocab_size": tokenizer.vocab_size,
            "eos_token_id": tokenizer.eos_token_id,
            "sources": self._describe_sources(),
        }
        tmp = folder / f".meta.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(meta, indent=1))
        os.replace(tmp, folder / "meta.json")

    def _encode_stream(self, docs, encode: _Encode):
        """Streaming: tokenise batches of 1000 documents in this process, yielding Arrow tables like
        ``map``."""
        import pyarrow as pa

        for start, texts in _text_batches(docs):
            out = encode({"text": texts}, list(range(start, start + len(texts))))
            yield pa.table({"ids": pa.array(out["ids"], type=pa.list_(pa.int64())),
                            "is_val": pa.array(out["is_val"], type=pa.bool_())})

    def _describe_sources(self) -> str:
        if self.hub["path"]:
            return f"hub dataset {self.hub['path']!r} ({self.hub['name']}, split {self.hub['split']})"
        return f"sources {self.sources}" + (f" / val_sources {self.val_sources}" if self.val_sources else "")

    # ---- Lightning hooks -----------------------------------------------------------------------------

    def prepare_data(self) -> None:
        self._prepare()

    def setup(self, stage: str | None = None) -> None:
        if self.token_dir is None or not (self.token_dir / "meta.json").is_file():
            self._prepare()
        meta = json.loads((self.token_dir / "meta.json").read_text())
        trainer = self.trainer
        model = getattr(trainer, "lightning_module", None) if trainer is not None else None
        model_vocab = getattr(getattr(model, "config", None), "vocab_size", None)
        if model_vocab is not None and model_vocab < self.tokenizer.vocab_size:
            raise ValueError(
                f"model vocab_size {model_vocab} is smaller than the vocabulary of tokenizer "
                f"{self.tokenizer.name!r} ({self.tokenizer.vocab_size}): set model.architecture.vocab_size ≥ "
                f"{self.tokenizer.vocab_size}"
            )
        block = self.seq_len + 1
        eos = meta["eos_token_id"] if self.document_mask else None
        self.train_set = PackedBlocks(self.token_dir / "train.bin", meta["dtype"], block, eos_token_id=eos)
        self.val_set = PackedBlocks(
            self.token_dir / "val.bin", meta["dtype"], block, self.max_val_blocks, eos
        )
        if trainer is not None and trainer.global_rank == 0 and trainer.default_root_dir:
            self.tokenizer.save(Path(trainer.default_root_dir) / "tokenizer")

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is not None:
            return trainer.global_rank, trainer.world_size
        return 0, 1

    def train_dataloader(self):
        rank, world = self._world()
        if self.train_set is None:
            raise RuntimeError("TextDataModule.setup() has not run")
        if len(self.train_set) < world * self.batch_size:
            raise ValueError(
                f"{self._describe_sources()}: {len(self.train_set)} training blocks of {self.seq_len + 1} "
                f"tokens cannot fill one batch of {self.batch_size} on each of {world} ranks"
            )
        return resumable_loader(
            self.train_set,
            self.batch_size,
            shuffle=True,
            seed=self.seed,
            num_replicas=world,
            rank=rank,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
        )

    def val_dataloader(self):
        if self.val_set is None:
            raise RuntimeError("TextDataModule.setup() has not run")
        return DataLoader(
            self.val_set, batch_size=self.val_batch_size, shuffle=False, num_workers=self.num_workers
        )


def _text_batches(docs, batch_size: int = 1000):
    """(index of the first document, texts) over a Dataset or IterableDataset with a ``text`` column."""
    start = 0
    for batch in docs.iter(batch_size=batch_size):
        texts = batch["text"]
        yield start, texts
        start += len(texts)


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
