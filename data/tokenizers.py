"""Tokenizers for the text pipeline: byte-level, RWKV World, any HF tokenizer, and BPE trained on a corpus.

One small interface (``Tokenizer``) so that the data module, the checkpoint and the evals agree:
``encode`` / ``encode_batch`` / ``decode``, ``vocab_size``, ``eos_token_id`` (the separator put
between packed documents, and the id generation stops at), ``name``, and ``save(directory)`` which
writes everything needed to rebuild the tokenizer offline (``load_saved_tokenizer``).

Specs understood by ``load_tokenizer``:

* ``byte``: UTF-8 bytes, vocabulary 256, always available. EOS is id 0 (the NUL byte, which does
  not occur in ordinary text; a NUL inside a document would read as a document boundary).
* ``rwkv_world``: the RWKV "World" vocabulary (65 536 ids, greedy longest match over bytes) read
  from the file shipped in the installed ``rwkv`` package; EOS is id 0 (reserved in that file).
* ``bpe:<vocab_size>``: a byte-level BPE trained on the training corpus (the data module trains
  and caches it; ``train_bpe`` does the training).
* a path to a ``tokenizer.json`` (or to a folder holding one) of the HF ``tokenizers`` library.
* an HF hub tokenizer name such as ``gpt2`` (needs the network once; cached by the hub afterwards).
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

META_FILE = "recall_lm_tokenizer.json"
HF_FILE = "tokenizer.json"
RWKV_FILE = "rwkv_vocab_v20230424.txt"
BPE_EOS = "<|endoftext|>"
# Names under which tokenizer.json files commonly declare their end-of-text token.
EOS_CANDIDATES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eos|>", "[EOS]", "<|im_end|>")
SPECS_HELP = ("'byte', 'rwkv_world', 'bpe:<vocab_size>' (trained on the corpus by the data module), "
              "a path to a tokenizer.json, or an HF hub tokenizer name (e.g. 'gpt2')")


class Tokenizer:
    """The interface every tokenizer offers. Subclasses set ``vocab_size``, ``eos_token_id``, ``name``."""

    vocab_size: int
    eos_token_id: int
    name: str

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: list[int]) -> str:
        raise NotImplementedError

    def save(self, directory) -> Path:
        """Write what ``load_saved_tokenizer`` needs into ``directory`` (created); returns it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"kind": self._kind, "name": self.name, "vocab_size": self.vocab_size,
                "eos_token_id": self.eos_token_id}
        self._save_files(directory)
        _atomic_write(directory / META_FILE, json.dumps(meta, indent=1))
        return directory

    @property
    def fingerprint(self) -> str:
        """A short hash that changes whenever the mapping text -> ids could change (used for caches)."""
        return hashlib.sha256(self._identity().encode()).hexdigest()[:16]

    _kind = "base"

    def _save_files(self, directory: Path) -> None:
        pass

    def _identity(self) -> str:
        return f"{self._kind}:{self.name}:{self.vocab_size}:{self.eos_token_id}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, vocab_size={self.vocab_size}, "
            f"eos_token_id={self.eos_token_id})"
        )


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes as ids (0..255); EOS = 0 (NUL). Decoding replaces broken UTF-8 with U+FFFD."""

    _kind = "byte"

    def __init__(self):
        self.vocab_size, self.eos_token_id, self.name = 256, 0, "byte"

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


class RWKVWorldTokenizer(Tokenizer):
    """RWKV World: greedy longest match of the input's UTF-8 bytes against a 65 529-entry byte vocabulary.

    The vocabulary file lists ``<id> <python literal of str or bytes> <byte length>`` per line; ids
    run 1..65529 and 0 is left free, the end-of-text token. ``vocab_size`` is 65 536 (as RWKV models).
    """

    _kind = "rwkv_world"

    def __init__(self, vocab_file: str | os.PathLike | None = None):
        self.vocab_file = Path(vocab_file) if vocab_file else default_rwkv_vocab_file()
        if not self.vocab_file.is_file():
            raise FileNotFoundError(f"RWKV World vocabulary file not found: {self.vocab_file}")
        self.vocab_size, self.eos_token_id, self.name = 65536, 0, "rwkv_world"
        self.id_to_bytes: dict[int, bytes] = {}
        for number, line in enumerate(self.vocab_file.read_text(encoding="utf-8").split("\n"), 1):
            if not line.strip():
                continue
            first, last = line.index(" "), line.rindex(" ")
            token = ast.literal_eval(line[first + 1 : last])
            token = token.encode("utf-8") if isinstance(token, str) else token
            if not isinstance(token, bytes) or len(token) != int(line[last + 1 :]):
                raise ValueError(f"{self.vocab_file}:{number}: malformed vocabulary line")
            self.id_to_bytes[int(line[:first])] = token
        self._trie = None

    def _build_trie(self) -> dict:
        # Nested dicts keyed by byte; the id of a complete token is stored under the key -1.
        root: dict = {}
        for idx, token in self.id_to_bytes.items():
            node = root
            for b in token:
                node = node.setdefault(b, {})
            node[-1] = idx
        return root

    def encode(self, text: str) -> list[int]:
        if self._trie is None:
            self._trie = self._build_trie()
        data, ids, i, n = text.encode("utf-8"), [], 0, None
        n = len(data)
        while i < n:
            node, j, best, best_end = self._trie, i, None, i
            while j < n and data[j] in node:
                node = node[data[j]]
                j += 1
                if -1 in node:
                    best, best_end = node[-1], j
            if best is None:  # every single byte is in the vocabulary, so this cannot happen
                raise ValueError(f"byte {data[i]} is not in the RWKV World vocabulary")
            ids.append(best)
            i = best_end
        return ids

    def decode(self, ids: list[int]) -> str:
        return b"".join(self.id_to_bytes.get(int(i), b"") for i in ids).decode("utf-8", errors="replace")

    def _save_files(self, directory: Path) -> None:
        _atomic_write(directory / RWKV_FILE, self.vocab_file.read_bytes())

    def _identity(self) -> str:
        return super()._identity() + ":" + _file_hash(self.vocab_file)

    def __getstate__(self):  # worker processes rebuild the trie instead of unpickling it
        return {k: v for k, v in self.__dict__.items() if k != "_trie"} | {"_trie": None}


class HFTokenizer(Tokenizer):
    """A ``tokenizers.Tokenizer`` (from a tokenizer.json, the hub, or ``train_bpe``) with its EOS id."""

    _kind = "hf"

    def __init__(self, tokenizer, eos_token_id: int, name: str):
        self.tokenizer = tokenizer
        self.vocab_size = int(tokenizer.get_vocab_size(with_added_tokens=True))
        self.eos_token_id, self.name = int(eos_token_id), name
        if not 0 <= self.eos_token_id < self.vocab_size:
            raise ValueError(
                f"tokenizer {name!r}: eos_token_id {eos_token_id} outside its vocabulary of {self.vocab_size}"
            )

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    def _save_files(self, directory: Path) -> None:
        _atomic_write(directory / HF_FILE, self.tokenizer.to_str())

    def _identity(self) -> str:
        return super()._identity() + ":" + hashlib.sha256(self.tokenizer.to_str().encode()).hexdigest()


def default_rwkv_vocab_file() -> Path:
    """The World vocabulary shipped inside the installed ``rwkv`` package (found without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("rwkv")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("tokenizer 'rwkv_world' needs the `rwkv` package (pip install rwkv)")
    return Path(list(spec.submodule_search_locations)[0]) / RWKV_FILE


def load_tokenizer(spec: str, **kwargs) -> Tokenizer:
    """Build a tokenizer from a spec (see the module docstring); ``eos_token=`` names the EOS of a
    tokenizer.json or hub tokenizer that does not declare one. Unknown specs raise ValueError."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"tokenizer spec must be a non-empty string, got {spec!r}; options: {SPECS_HELP}")
    spec = spec.strip()
    if spec == "byte":
        return ByteTokenizer()
    if spec == "rwkv_world":
        return RWKVWorldTokenizer(kwargs.get("vocab_file"))
    if spec.startswith("bpe:"):
        raise ValueError(
            f"tokenizer {spec!r} is trained on a corpus: use train_bpe(texts, vocab_size) or the "
            "TextDataModule option tokenizer: bpe:<vocab_size>"
        )
    path = Path(spec).expanduser()
    if path.is_dir() and (path / META_FILE).is_file():
        return load_saved_tokenizer(path)
    if path.is_dir() and (path / HF_FILE).is_file():
        path = path / HF_FILE
    if path.is_file():
        return _from_tokenizer_json(path, kwargs.get("eos_token"))
    if path.suffix == ".json" or spec.startswith((".", "/", "~")) or os.sep + os.sep in spec:
        raise FileNotFoundError(f"tokenizer file not found: {spec}")
    if _looks_like_hub_name(spec):
        return _from_hub(spec, kwargs.get("eos_token"))
    raise ValueError(f"unknown tokenizer {spec!r}; options: {SPECS_HELP}")


def _looks_like_hub_name(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) <= 2 and all(p and all(c.isalnum() or c in "-_." for c in p) for p in parts)


def _find_eos(tokenizer, eos_token: str | None, where: str) -> int:
    if eos_token is not None:
        idx = tokenizer.token_to_id(eos_token)
        if idx is None:
            raise ValueError(f"{where}: eos_token {eos_token!r} is not in the vocabulary")
        return idx
    for candidate in EOS_CANDIDATES:
        if (idx := tokenizer.token_to_id(candidate)) is not None:
            return idx
    raise ValueError(f"{where}: no end-of-text token found among {EOS_CANDIDATES}; pass eos_token=")


def _from_tokenizer_json(path: Path, eos_token: str | None) -> HFTokenizer:
    from tokenizers import Tokenizer as RawTokenizer

    try:
        raw = RawTokenizer.from_file(str(path))
    except Exception as error:  # the library raises a bare Exception on malformed files
        raise ValueError(f"cannot read tokenizer file {path}: {error}") from None
    config = path.parent / "tokenizer_config.json"
    if eos_token is None and config.is_file():
        eos = json.loads(config.read_text()).get("eos_token")
        eos_token = eos.get("content") if isinstance(eos, dict) else eos
    return HFTokenizer(raw, _find_eos(raw, eos_token, str(path)), name=str(path))


def _offline() -> bool:
    return any(
        os.environ.get(v, "").lower() in ("1", "true", "yes")
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _from_hub(name: str, eos_token: str | None) -> HFTokenizer:
    if _offline():  # answer at once instead of importing transformers to learn it is not cached
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(name, "tokenizer_config.json"), str):
            raise ValueError(
                f"unknown tokenizer {name!r}: not a local file, and it could not be loaded from the HF hub "
                f"(offline: HF_HUB_OFFLINE is set and it is not in the local hub cache); "
                f"options: {SPECS_HELP}"
            )
    try:
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(name)
    except Exception as error:
        hint = " (offline: HF_HUB_OFFLINE is set and it is not in the local hub cache)" if _offline() else ""
        raise ValueError(
            f"unknown tokenizer {name!r}: not a local file and it could not be loaded from the HF hub"
            f"{hint}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}; "
            f"options: {SPECS_HELP}"
        ) from None
    if not getattr(hf, "is_fast", False):
        raise ValueError(
            f"hub tokenizer {name!r} has no fast (tokenizers) version; save a tokenizer.json instead"
        )
    raw = hf.backend_tokenizer
    eos = hf.eos_token_id if eos_token is None else None
    return HFTokenizer(raw, eos if eos is not None else _find_eos(raw, eos_token, name), name=name)


def train_bpe(
    texts: Iterable[str], vocab_size: int, eos_token: str = BPE_EOS, batch_size: int = 1000
) -> HFTokenizer:
    """Train a byte-level BPE (GPT-2 style: lossless on any UTF-8 text) with ``vocab_size`` ids, EOS id 0."""
    from tokenizers import Tokenizer as RawTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if int(vocab_size) < 257:
        raise ValueError(f"train_bpe: vocab_size must be ≥ 257 (256 bytes + EOS), got {vocab_size}")
    raw = RawTokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=int(vocab_size), special_tokens=[eos_token], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())

    def batches():
        batch = []
        for text in texts:
            batch.append(text)
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    raw.train_from_iterator(batches(), trainer=trainer)
    return HFTokenizer(raw, raw.token_to_id(eos_token), name=f"bpe:{vocab_size}")


def load_saved_tokenizer(directory) -> Tokenizer:
    """Rebuild a tokenizer from the folder ``Tokenizer.save`` wrote (offline)."""
    directory = Path(directory)
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"no saved tokenizer in {directory} (missing {META_FILE})")
    meta = json.loads(meta_path.read_text())
    kind = meta.get("kind")
    if kind == "byte":
        tokenizer = ByteTokenizer()
    elif kind == "rwkv_world":
        tokenizer = RWKVWorldTokenizer(directory / RWKV_FILE)
    elif kind == "hf":
        from tokenizers import Tokenizer as RawTokenizer

        tokenizer = HFTokenizer(
            RawTokenizer.from_file(str(directory / HF_FILE)), meta["eos_token_id"], meta["name"]
        )
    else:
        raise ValueError(f"{meta_path}: unknown tokenizer kind {kind!r}")
    tokenizer.name = meta.get("name", tokenizer.name)
    return tokenizer


def tokenizer_for_checkpoint(ckpt_path) -> Tokenizer | None:
    """The tokenizer saved for the run of ``ckpt_path`` (a .ckpt file or a run folder), or None.

    The text data module saves it to ``<run>/tokenizer/``; checkpoints live in ``<run>/checkpoints/``,
    so this looks in the checkpoint's folder, its parent, and (for a run folder) the folder itself.
    """
    path = Path(ckpt_path)
    folder = path if path.is_dir() else path.parent
    for candidate in (folder / "tokenizer", folder.parent / "tokenizer", folder):
        if (candidate / META_FILE).is_file():
            return load_saved_tokenizer(candidate)
    return None


def _file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _atomic_write(path: Path, content: str | bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    os.replace(tmp, path)
