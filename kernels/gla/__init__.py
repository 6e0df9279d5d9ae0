"""Gated linear attention (linear attention, RetNet, GLA, RWKV-6): one op, four backends.

See :func:`gated_linear_attention` for the maths and shapes; ``gated_linear_attention_step`` decodes
one token.
"""
from recall_lm.kernels.gla.interface import gated_linear_attention, gated_linear_attention_step
from recall_lm.kernels.gla.signed import signed_gated_linear_attention, signed_gated_linear_attention_step

__all__ = [
    "gated_linear_attention",
    "gated_linear_attention_step",
    "signed_gated_linear_attention",
    "signed_gated_linear_attention_step",
]
