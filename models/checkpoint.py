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


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False) -> dict:
    """The dict a train.py ``.ckpt`` file holds, read weights-only (no code from the file runs); a ValueError
    ``"<path> is not a train.py checkpoint (<why>)"`` for anything else."""
    path = Path(path)
    with path.open("rb") as f:
        if f.read(4) != b"PK\x03\x04":
            raise ValueError(f"{path} is not a train.py checkpoint (not a torch.save zip archive)")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as error:  # noqa: BLE001 — whatever torch fails on, the file is not a checkpoint
        reason = (str(error).strip() or type(error).__name__).splitlines()[0]
        raise ValueError(f"{path} is not a train.py checkpoint ({reason})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{path} is not a train.py checkpoint (it has no state_dict)")
    return checkpoint


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[DecoderLM, dict]:
    """Rebuild the DecoderLM saved at ``path``; returns (model in eval mode, hyper-parameters dict).
    For an exported folder the hyper-parameters are ``{"architecture": <its ModelConfig as a dict>}``. A
    checkpoint written before ``model.model`` became ``model.architecture`` keeps it under ``model``."""
    from dataclasses import asdict

    from recall_lm.models.pretrained import is_pretrained_dir, load_pretrained

    path = resolve_checkpoint(path)
    if is_pretrained_dir(path):
        model = load_pretrained(path, map_location)
        return model, {"architecture": asdict(model.config)}
    checkpoint = read_checkpoint(path, map_location)
    hparams = checkpoint.get("hyper_parameters") or {}
    architecture = hparams.get("architecture", hparams.get("model"))
    if not isinstance(architecture, dict):
        raise ValueError(f"{path} has no 'architecture' hyper-parameters: not a train.py checkpoint")
    model = DecoderLM(ModelConfig(**architecture))
    prefix = "model."
    weights = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    model.load_state_dict(weights)
    return model.eval(), hparams
