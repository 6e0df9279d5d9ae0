"""FLOPs of the pieces mixers are made of, per token (a multiply-add is 2 FLOPs; the conventions and the
derivation of each count are in recall_lm.models.flops, which adds them up over a model)."""
from __future__ import annotations

import inspect

from torch import nn


def linear_flops(module: nn.Linear | None) -> float:
    """2·in·out for one token through an nn.Linear (0 for None)."""
    return 0.0 if module is None else 2.0 * module.in_features * module.out_features


def chunked_linear_attention_flops(
    seq_len: int, chunk_size: int, heads: int, key_dim: int, value_dim: int
) -> float:
    """Per token: heads · (2·C·(F + V) + 4·F·V), C = min(chunk_size, seq_len) (see module doc)."""
    C = max(1, min(chunk_size, seq_len))
    return heads * (2.0 * C * (key_dim + value_dim) + 4.0 * key_dim * value_dim)


def chunked_delta_rule_flops(
    seq_len: int, chunk_size: int, heads: int, key_dim: int, value_dim: int
) -> float:
    """Per token: heads · (4·C·F + C²/3 + 2·C·(F + V) + 2·C·V + 6·F·V), C = min(chunk_size, seq_len)
    (module doc)."""
    C, F, V = max(1, min(chunk_size, seq_len)), key_dim, value_dim
    return heads * (4.0 * C * F + C * C / 3.0 + 2.0 * C * (F + V) + 2.0 * C * V + 6.0 * F * V)


def causal_attention_core_flops(seq_len: int, width: int) -> float:
    """q·kᵀ and p·v over the t + 1 visible keys, averaged over t < T: 4·width·(T + 1)/2."""
    return 4.0 * width * (seq_len + 1) / 2.0


def window_attention_core_flops(seq_len: int, width: int, window: int) -> float:
    """q·kᵀ and p·v over min(t + 1, w) keys, averaged over t < T."""
    T, w = seq_len, min(window, seq_len)
    visible = w * (w + 1) / 2.0 + (T - w) * w  # Σ_t min(t + 1, w)
    return 4.0 * width * visible / T


def short_conv_flops(conv) -> float:
    """A depthwise causal convolution (recall_lm.layers.short_conv.ShortConvolution): 2·kernel·channels."""
    return 2.0 * conv.kernel_size * conv.dim


def default_chunk_size(op) -> int:
    """The chunk size a kernel op uses when the layer does not pass one."""
    return inspect.signature(op).parameters["chunk_size"].default
