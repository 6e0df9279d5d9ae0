"""Load a trained DecoderLM from a Lightning checkpoint, a run folder or an exported folder, without
unpickling code.

Checkpoints written by ``train.py`` hold only plain types, so ``torch.load(weights_only=True)``
reads them; the model is rebuilt from the ``model`` hyper-parameters (a ModelConfig as a dict).
An exported folder (``python -m recall_lm.models.export``: config.json + model.safetensors) loads as JSON and
safetensors.
"""
from __future__ import annotations

from pathlib import Path

import torch

from recall_lm.models.config import ModelConfig
from recall_lm.models.decoder import DecoderLM


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run folder / its ``checkpoints/`` folder (then ``last.ckpt`` in it), or an
    exported folder (returned as it is)."""
    from recall_lm.models.pretrained import is_pretrained_dir

    path = Path(path)
    if is_pretrained_dir(path):
        return path
    candidates = [path] if path.is_file() else [path / "last.ckpt", path / "checkpoints" / "last.ckpt"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no checkpoint at {path} (looked for {', '.join(map(str, candidates))})")


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[DecoderLM, dict]:
    """Rebuild the DecoderLM saved at ``path``; returns (model in eval mode, hyper-parameters dict).
    For an exported folder the hyper-parameters are ``{"model": <its ModelConfig as a dict>}``."""
    from dataclasses import asdict

    from recall_lm.models.pretrained import is_pretrained_dir, load_pretrained

    path = resolve_checkpoint(path)
    if is_pretrained_dir(path):
        model = load_pretrained(path, map_location)
        return model, {"model": asdict(model.config)}
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 — whatever torch fails on, the file is not a checkpoint
        reason = (str(error).strip() or type(error).__name__).splitlines()[0]
        raise ValueError(f"{path} is not a train.py checkpoint ({reason})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{path} is not a train.py checkpoint (it has no state_dict)")
    hparams = checkpoint.get("hyper_parameters") or {}
    if "model" not in hparams:
        raise ValueError(f"{path} has no 'model' hyper-parameters: not a train.py checkpoint")
    model = DecoderLM(ModelConfig(**hparams["model"]))
    prefix = "model."
    weights = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    model.load_state_dict(weights)
    return model.eval(), hparams
