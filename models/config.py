"""ModelConfig: the YAML-friendly description of a decoder language model."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ModelConfig:
    """A decoder LM: embedding → ``n_layers`` blocks → norm → tied head.

    ``mixer`` is one registered mixer name, or a list of names cycled over the layers (a hybrid:
    ``[base_conv, based]`` gives base_conv, based, base_conv, based, ...). ``mixer_kwargs`` maps a
    mixer name to the keyword arguments of every layer of that mixer. ``mlp`` is ``"swiglu"`` or
    ``"none"`` (Zoology's MQAR models have no MLP).
    """

    vocab_size: int = 8192
    d_model: int = 128
    n_layers: int = 2
    mixer: str | list[str] = "attention"
    mixer_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    mlp: str = "swiglu"
    mlp_kwargs: dict[str, Any] = field(default_factory=dict)
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    init_std: float = 0.02

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "n_layers"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ModelConfig.{name} must be ≥ 1, got {getattr(self, name)}")
        names = [self.mixer] if isinstance(self.mixer, str) else list(self.mixer)
        if not names:
            raise ValueError("ModelConfig.mixer must name at least one mixer")
        unused = sorted(set(self.mixer_kwargs) - set(names))
        if unused:
            raise ValueError(f"ModelConfig.mixer_kwargs has entries {unused} for mixers not in mixer={names}")

    def layer_mixers(self) -> list[str]:
        """The mixer name of each layer, cycling a list over the layers."""
        names = [self.mixer] if isinstance(self.mixer, str) else list(self.mixer)
        return [names[i % len(names)] for i in range(self.n_layers)]
