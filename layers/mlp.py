"""Channel mixers that fill the MLP slot of a block."""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

from recall_lm.layers.flops import linear_flops


class SwiGLU(nn.Module):
    """``W_down(silu(W_gate x) * W_up x)``; hidden size defaults to 8/3·d rounded up to a multiple of 64.

    x: [B, T, d_model] -> [B, T, d_model]
    """

    residual_projections = ("down",)

    def __init__(self, d_model: int, hidden_size: int | None = None, multiple_of: int = 64):
        super().__init__()
        if int(multiple_of) != multiple_of or multiple_of < 1:
            raise ValueError(f"swiglu: multiple_of must be an integer ≥ 1, got {multiple_of}")
        if hidden_size is not None and (int(hidden_size) != hidden_size or hidden_size < 1):
            raise ValueError(f"swiglu: hidden_size must be an integer ≥ 1, got {hidden_size}")
        if hidden_size is None:
            hidden_size = multiple_of * -(-int(8 * d_model / 3) // multiple_of)
        self.gate_up = nn.Linear(d_model, 2 * hidden_size, bias=False)
        self.down = nn.Linear(hidden_size, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)

    def flops_per_token(self, seq_len: int) -> float:
        return linear_flops(self.gate_up) + linear_flops(self.down)


class IdentityMLP(nn.Module):
    """The MLP slot left as the identity: the block then adds ``norm(x)`` back onto the residual stream.

    This is Zoology's MQAR block (``state_mixer: torch.nn.Identity``): its second pre-norm sub-layer
    is an identity, so each layer computes x ← x + mixer(norm₁(x)), then x ← x + norm₂(x) — unlike
    ``mlp: none``, which drops the second sub-layer. No parameters besides the norm's.
    x: [B, T, d_model] -> [B, T, d_model]
    """

    residual_projections: tuple[str, ...] = ()

    def __init__(self, d_model: int):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def flops_per_token(self, seq_len: int) -> float:
        return 0.0


MLPS: dict[str, type[nn.Module]] = {"swiglu": SwiGLU, "identity": IdentityMLP}  # read it through mlps()


def mlps() -> dict[str, type[nn.Module]]:
    """Every registered MLP class by name (some are registered beside their mixer, e.g. ``rwkv6_cmix``)."""
    from recall_lm.layers.registry import load_mixer_modules

    load_mixer_modules()
    return MLPS


def register_mlp(name: str):
    """Class decorator for modules that fill a block's MLP slot: ``forward(x) -> y`` and
    ``flops_per_token(seq_len)``. A stateful one (e.g. RWKV-6 channel-mix with its token shift) follows the
    mixer contract's forward(x, state) -> (y, state), init_state and state_size."""

    def decorate(cls):
        if not callable(getattr(cls, "flops_per_token", None)):
            raise TypeError(f"mlp {name!r} ({cls.__name__}) must define flops_per_token(seq_len)")
        if name in MLPS or name == "none":
            raise ValueError(f"mlp {name!r} is registered twice")
        MLPS[name] = cls
        return cls

    return decorate


def build_mlp(name: str, d_model: int, **kwargs) -> nn.Module | None:
    """The MLP slot of a block: a registered channel mixer, or None for ``"none"`` (no second sub-layer)."""
    if name not in mlps() and name != "none":
        raise ValueError(f"unknown mlp {name!r}; known: none, {', '.join(sorted(MLPS))}")
    if name == "none":
        if kwargs:
            raise ValueError(f"mlp 'none' takes no arguments, got mlp_kwargs {sorted(kwargs)}")
        return None
    accepted = inspect.signature(MLPS[name].__init__).parameters
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        allowed = sorted(p for p in accepted if p not in ("self", "d_model"))
        raise ValueError(f"mlp {name!r} got unknown argument(s) {unknown}; it accepts {allowed}")
    return MLPS[name](d_model, **kwargs)
