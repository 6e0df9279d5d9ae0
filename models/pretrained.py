"""The exported model folder (the Hugging Face layout): ``config.json``, ``model.safetensors``, tokenizer.

``config.json`` holds the ModelConfig's fields at the top level plus ``model_type`` / ``architectures``
(so ``transformers.AutoConfig`` reads it once ``recall_lm.models.hf`` is imported);
``model.safetensors`` holds the DecoderLM state dict (a tied head is stored once, as the embedding).
Loading reads JSON and tensors only: nothing is ever unpickled.
"""
from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path

from recall_lm.models.config import ModelConfig

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
MODEL_TYPE, ARCHITECTURE = "recall_lm", "RecallLMForCausalLM"


def is_pretrained_dir(path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def config_dict(config: ModelConfig) -> dict:
    return {**asdict(config), "model_type": MODEL_TYPE, "architectures": [ARCHITECTURE]}


def read_config(path) -> ModelConfig:
    """The ModelConfig of an exported folder (extra keys, e.g. those transformers adds, are ignored)."""
    raw = json.loads((Path(path) / CONFIG_FILE).read_text())
    if raw.get("model_type", MODEL_TYPE) != MODEL_TYPE:
        raise ValueError(f"{path}/{CONFIG_FILE}: model_type {raw.get('model_type')!r} is not {MODEL_TYPE!r}")
    names = {f.name for f in fields(ModelConfig)}
    return ModelConfig(**{k: v for k, v in raw.items() if k in names})


def save_pretrained(model, out_dir, tokenizer=None) -> Path:
    """Write ``model`` (a DecoderLM) and optionally its tokenizer (``recall_lm.data.tokenizers.Tokenizer``)
    to ``out_dir``."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if model.config.tie_embeddings:
        state.pop("head.weight")  # the same tensor as embedding.weight
    save_file(state, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    (out / CONFIG_FILE).write_text(json.dumps(config_dict(model.config), indent=2) + "\n")
    if tokenizer is not None:
        tokenizer.save(out)
    return out


def load_pretrained(path, map_location="cpu"):
    """The DecoderLM of an exported folder, in eval mode."""
    from safetensors.torch import load_file

    from recall_lm.models.decoder import DecoderLM

    path = Path(path)
    if not is_pretrained_dir(path):
        raise FileNotFoundError(
            f"{path} is not an exported model folder (needs {CONFIG_FILE} and {WEIGHTS_FILE})"
        )
    config = read_config(path)
    model = DecoderLM(config)
    state = load_file(str(path / WEIGHTS_FILE), device=str(map_location) if map_location else "cpu")
    if config.tie_embeddings:
        state["head.weight"] = state["embedding.weight"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}/{WEIGHTS_FILE} does not match its config: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    return model.to(map_location).eval()
