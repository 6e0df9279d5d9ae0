"""Token shift (RWKV's "time shift"): each position sees the previous token's input, with a carried state."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from recall_lm.layers.state import MixerState


@dataclass
class TokenShiftState(MixerState):
    """The last input seen by a token-shifting layer. last: [B, d_model] (zeros before the first token)."""

    last: torch.Tensor


def token_shift(x: torch.Tensor, last: torch.Tensor | None = None, documents=None) -> torch.Tensor:
    """The sequence shifted one step to the right: out[:, t] = x[:, t-1], out[:, 0] = ``last`` (or 0).

    x: [B, T, D]; last: [B, D] or None. With packed ``documents`` (``recall_lm.layers.documents.Documents``)
    the shift restarts at each document: its first token sees 0. Returns [B, T, D].
    """
    first = x.new_zeros(x.shape[0], 1, x.shape[2]) if last is None else last.to(x.dtype)[:, None]
    shifted = torch.cat([first, x[:, :-1]], dim=1)
    return shifted if documents is None else shifted.masked_fill(documents.starts[None, :, None], 0.0)
