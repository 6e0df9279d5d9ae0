"""ModelConfig: the YAML-friendly description of a decoder language model."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

IGNORE_INDEX = -100  # the label the loss ignores (torch.nn.functional.cross_entropy's default)

@dataclass
class ModelConfig:
    """A decoder LM: embedding → ``n_layers`` blocks → norm → tied head.

    ``mixer`` is one registered mixer name, or a list of names cycled over the layers (a hybrid:
    ``[base_conv, based]`` gives base_conv, based, base_conv, based, ...). ``mixer_kwargs`` maps a
    mixer name to the keyword arguments of every layer of that mixer. ``mlp`` is ``"swiglu"``,
    ``"none"`` (no second sub-layer) or ``"identity"`` (Zoology's MQAR block: the second sub-layer
    adds norm(x) back onto the residual stream; see recall_lm.layers.mlp.IdentityMLP).

    The remaining options reproduce other training recipes (``configs/zoology/`` sets them to Zoology's):

    * ``norm``: the block and final norm, ``"rmsnorm"`` (default) or ``"layernorm"`` (Zoology, GPT-2).
    * ``embed_dropout``: dropout on the token embeddings during training (Zoology: 0.1).
    * ``scaled_residual_init``: the projections that write into the residual stream (each mixer's and
      MLP's ``residual_projections``: attention's ``out``, SwiGLU's ``down``, ...) start with std
      ``init_std / √(2·n_layers)`` instead of ``init_std`` (GPT-2's rule, which Zoology applies to
      parameters named ``out_proj`` / ``fc2``: of its MQAR mixers, only attention's output projection).
    """

    vocab_size: int = 8192
    d_model: int = 128
    n_layers: int = 2
    mixer: str | list[str] = "attention"
    mixer_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    mlp: str = "swiglu"
    mlp_kwargs: dict[str, Any] = field(default_factory=dict)
    norm: str = "rmsnorm"
    norm_eps: float = 1e-5
    embed_dropout: float = 0.0
    tie_embeddings: bool = True
    init_std: float = 0.02
    scaled_residual_init: bool = False

    def __post_init__(self):
        from recall_lm.layers.mlp import mlps
        from recall_lm.layers.norms import NORMS
        from recall_lm.layers.registry import mixers

        MIXERS, MLPS = mixers(), mlps()

        for name in ("vocab_size", "d_model", "n_layers"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ModelConfig.{name} must be ≥ 1, got {getattr(self, name)}")
        names = [self.mixer] if isinstance(self.mixer, str) else list(self.mixer)
        if not names:
            raise ValueError("ModelConfig.mixer must name at least one mixer")
        for name in names:
            if name not in MIXERS:
                raise ValueError(
                    f"unknown mixer {name!r} in ModelConfig.mixer; known: {', '.join(sorted(MIXERS))}"
                )
        unused = sorted(set(self.mixer_kwargs) - set(names))
        if unused:
            raise ValueError(f"ModelConfig.mixer_kwargs has entries {unused} for mixers not in mixer={names}")
        if self.mlp != "none" and self.mlp not in MLPS:
            raise ValueError(
                f"unknown mlp {self.mlp!r} in ModelConfig.mlp; known: none, {', '.join(sorted(MLPS))}"
            )
        if self.norm not in NORMS:
            raise ValueError(f"unknown ModelConfig.norm {self.norm!r}; known: {', '.join(NORMS)}")
        if not 0.0 <= self.embed_dropout < 1.0:
            raise ValueError(f"ModelConfig.embed_dropout must be in [0, 1), got {self.embed_dropout}")
        if not self.init_std > 0:
            raise ValueError(f"ModelConfig.init_std must be > 0, got {self.init_std}")

    def layer_mixers(self) -> list[str]:
        """The mixer name of each layer, cycling a list over the layers."""
        names = [self.mixer] if isinstance(self.mixer, str) else list(self.mixer)
        return [names[i % len(names)] for i in range(self.n_layers)]
