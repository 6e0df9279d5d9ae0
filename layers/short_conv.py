"""A short causal depthwise convolution over time, with a decoding state: a building block of mixers."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from recall_lm.layers.state import MixerState

ACTIVATIONS = {None: lambda x: x, "silu": F.silu}
LOOP_TAPS = 4  # packed documents: filters this short run tap by tap, longer ones one padded row a document


@dataclass
class ConvState(MixerState):
    """The last ``kernel_size - 1`` inputs of a short convolution, oldest first.
    x: [B, kernel_size - 1, D]."""

    x: torch.Tensor


class ShortConvolution(nn.Module):
    """y_t = act(b + Σ_{i=0}^{K-1} w_i ⊙ x_{t-K+1+i}) per channel, with x_s = 0 before the first token.

    A depthwise (one filter per channel) causal convolution of kernel size K, as in H3/Hyena's short
    filters and BASED's BaseConv; the weight is a depthwise nn.Conv1d's ([D, 1, K], last tap = current
    token), initialised as PyTorch does. Decoding keeps the last K - 1 inputs (``ConvState``), so a
    chunk continues exactly where the previous one stopped.
    x: [B, T, D] -> y: [B, T, D]; ``activation``: None or "silu".
    """

    def __init__(self, dim: int, kernel_size: int = 3, bias: bool = False, activation: str | None = None):
        super().__init__()
        if dim < 1:
            raise ValueError(f"ShortConvolution: dim must be ≥ 1, got {dim}")
        if kernel_size < 1:
            raise ValueError(f"ShortConvolution: kernel_size must be ≥ 1, got {kernel_size}")
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"ShortConvolution: activation must be one of {list(ACTIVATIONS)}, got {activation!r}"
            )
        self.dim, self.kernel_size, self.activation = dim, kernel_size, activation
        self.conv = nn.Conv1d(dim, dim, kernel_size, groups=dim, bias=bias)

    def forward(self, x: torch.Tensor, state: ConvState | None = None,
                documents=None) -> tuple[torch.Tensor, ConvState | None]:
        """``documents`` (``recall_lm.layers.documents.Documents``, x [1, T, D], no state): the filter of
        each token reaches back only within its own document."""
        B, T, D = x.shape
        if D != self.dim:
            raise ValueError(f"ShortConvolution: x has {D} channels, expected dim={self.dim}")
        if documents is not None:
            return ACTIVATIONS[self.activation](self._within_documents(x, documents)), None
        if state is None:
            padded = F.pad(x.transpose(1, 2), (self.kernel_size - 1, 0))  # [B, D, K - 1 + T]
            new_state = None
        else:
            history = torch.cat([state.x.to(x.dtype), x], dim=1)  # [B, K - 1 + T, D]
            padded = history.transpose(1, 2)
            new_state = ConvState(history[:, history.shape[1] - (self.kernel_size - 1) :].to(state.x.dtype))
            if T == 1:  # a decode step: one weighted sum over the window (no convolution call per token)
                y = (history * self.conv.weight[:, 0, :].t().to(x.dtype)).sum(1, keepdim=True)
                y = y if self.conv.bias is None else y + self.conv.bias.to(x.dtype)
                return ACTIVATIONS[self.activation](y), new_state
        y = F.conv1d(padded, self.conv.weight, self.conv.bias, groups=self.dim).transpose(1, 2)
        return ACTIVATIONS[self.activation](y), new_state

    def _within_documents(self, x: torch.Tensor, documents) -> torch.Tensor:
        """Σ_j w_{K-1-j} ⊙ x_{t-j} over the taps j ≤ t's position in its document (+ bias)."""
        K, T = self.kernel_size, x.shape[1]
        if K > LOOP_TAPS and T:  # a long filter: each document in its own zero-padded row, one convolution
            rows = x.new_zeros(len(documents.lengths), max(documents.lengths), self.dim)
            rows = rows.index_put((documents.index, documents.positions), x[0])  # [N, longest, D]
            padded = F.pad(rows.transpose(1, 2), (K - 1, 0))
            bias = None if self.conv.bias is None else self.conv.bias.to(x.dtype)
            y = F.conv1d(padded, self.conv.weight.to(x.dtype), bias, groups=self.dim).transpose(1, 2)
            return y[documents.index, documents.positions][None]
        w = self.conv.weight[:, 0, :].to(x.dtype)  # [D, K], last tap = current token
        y = x * w[:, K - 1]
        for j in range(1, min(K, T)):
            earlier = F.pad(x[:, : T - j], (0, 0, j, 0))  # x_{t-j}
            reach = (documents.positions >= j)[None, :, None]
            y = y + torch.where(reach, earlier, 0.0) * w[:, K - 1 - j]
        return y if self.conv.bias is None else y + self.conv.bias.to(x.dtype)

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> ConvState:
        return ConvState(torch.zeros(batch_size, self.kernel_size - 1, self.dim, device=device, dtype=dtype))

    def state_size(self, seq_len: int = 1) -> int:
        return (self.kernel_size - 1) * self.dim
