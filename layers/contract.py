"""The mixer contract: every hook that DecoderLM, the training task, the FLOPs count and FSDP read from a
sequence mixer, with its default. A mixer subclasses ``Mixer`` and is registered with
``@register_mixer(name)`` (recall_lm.layers.registry), which refuses a class that is not a ``Mixer`` or
leaves a required method undefined.

Required:
    __init__(d_model, **options)   options come from ``ModelConfig.mixer_kwargs[name]``; a mixer that
        names ``layer_idx``, ``n_layers`` or ``first_of_its_kind`` in its signature also gets its place
        in the model (DecoderLM passes them).
    forward(x [B, T, d_model], state=None, documents=None) -> (y [B, T, d_model], new_state)
        state None: the training path, new_state None. Given a state (from ``init_state`` or an earlier
        call), continue from it and return the state after the last token. ``documents``
        (recall_lm.layers.documents.Documents): packed documents that must not see each other.
    init_state(batch_size, device, dtype) -> MixerState   (recall_lm.layers.state)
    state_size(seq_len=1) -> int   numbers held per sequence while decoding after ``seq_len`` tokens
    flops_per_token(seq_len) -> float   forward FLOPs per token at training length ``seq_len``
        (a multiply-add is 2; matrix products and short convolutions only; recall_lm.models.flops)

Optional, with the defaults below:
    residual_projections   Linear submodules whose init ``ModelConfig.scaled_residual_init`` scales down
    no_weight_decay        parameter names never weight-decayed (decays, biases, mixing vectors)
    lr_scale               {parameter name: learning-rate multiplier} (e.g. RWKV-7's w0 at 2×)
    uses_shared            forward also receives ``shared``, one dict per model forward, for what an
                           earlier layer leaves (RWKV-7's value residual)
    keep_fp32_under_fsdp   parameters (log-decays, bonuses) that bf16 would round: FSDP keeps them fp32
    aux_loss               set by forward on the training path to a scalar added to the loss (MoM)
    reset_mixer_parameters()   the mixer's own initialisation, applied after DecoderLM's generic one

Every registered mixer is checked against this contract by tests/layers/test_mixer_protocol.py (causal,
whole sequence = token by token = prefill then continue, packed documents, exact state size, every
gradient, bf16 autocast), and tests/layers/test_contract.py lists what each still lacks elsewhere.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import ClassVar, Mapping

import torch
from torch import nn

REQUIRED = ("forward", "init_state", "state_size", "flops_per_token")


class Mixer(nn.Module):
    """Base class of every sequence mixer (see the module docstring for the contract)."""

    mixer_name: ClassVar[str] = ""  # set by @register_mixer
    residual_projections: tuple[str, ...] = ()
    no_weight_decay: tuple[str, ...] = ()
    lr_scale: Mapping[str, float] = MappingProxyType({})
    uses_shared: ClassVar[bool] = False
    keep_fp32_under_fsdp: ClassVar[bool] = False
    aux_loss: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, state=None, documents=None):
        raise NotImplementedError

    def init_state(self, batch_size: int, device=None, dtype=None):
        raise NotImplementedError

    def state_size(self, seq_len: int = 1) -> int:
        raise NotImplementedError

    def flops_per_token(self, seq_len: int) -> float:
        raise NotImplementedError

    def reset_mixer_parameters(self) -> None:
        """The mixer's own initialisation (DecoderLM calls it after its generic normal init); none by
        default."""


def missing_parts(cls: type) -> list[str]:
    """What ``cls`` lacks of the contract: not a Mixer, or required methods it does not define."""
    if not (isinstance(cls, type) and issubclass(cls, Mixer)):
        return ["subclass recall_lm.layers.contract.Mixer"]
    return [f"define {name}()" for name in REQUIRED if getattr(cls, name) is getattr(Mixer, name)]
