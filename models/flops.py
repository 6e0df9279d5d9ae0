"""Analytic FLOPs per token of a DecoderLM, per mixer, for throughput and MFU.

torch's FlopCounterMode cannot see our Triton kernels, and it counts a causal SDPA as a full T×T
product, so the model's FLOPs are counted by hand here. Conventions:

* a multiply-add is 2 FLOPs; only matrix products are counted (the usual MFU convention: norms,
  activations, gates, rotary and softmax are left out), plus the depthwise short convolutions;
* forward FLOPs per token at training length ``seq_len`` T, averaged over the T positions;
  a training step (forward + backward) costs 3× the forward (``training_flops_per_token``);
* softmax attention is causal and counted exactly: query t scores and mixes t + 1 keys, so per layer
  4·d·(T + 1)/2 on average (PaLM's 12·L·d·T training term counts the masked half as well);
* sliding-window attention: query t sees min(t + 1, w) keys;
* chunked linear attention (linear_attention, BASED, RetNet, RWKV-6, each MoM memory), chunk C
  (min(C, T)), key width F and value width V per head: intra-chunk scores and their product with
  the values as full C×C blocks, 2·C·(F + V), plus the state read q·S and the state update kᵀv,
  4·F·V, per token and head — what the chunked kernels compute;
* the chunked delta rule (DeltaNet, Gated DeltaNet), per token and head: K Kᵀ and Q Kᵀ blocks
  4·C·F, the unit-triangular inverse (blocked, about C³/3 per chunk: C²/3) and its product with the
  right-hand sides of W and U 2·C·(F + V), the intra-chunk product 2·C·V, and the state reads W·S,
  Q·S and update Kᵀ·V_new 6·F·V;
* MoM: each token is routed to top_k memories (+ the shared one); a memory's packed stream of a
  sequence holds on average T·top_k/M tokens, which bounds its effective chunk.

A mixer or MLP class may define ``flops_per_token(seq_len) -> float`` itself; it takes precedence
over the table below (new mixers do that, or add a rule here).
"""
from __future__ import annotations

import inspect
from typing import Callable

from torch import nn


def linear_flops(module: nn.Linear | None) -> float:
    """2·in·out for one token through an nn.Linear (0 for None)."""
    return 0.0 if module is None else 2.0 * module.in_features * module.out_features


def chunked_linear_attention_flops(seq_len: int, chunk_size: int, heads: int, key_dim: int, value_dim: int) -> float:
    """Per token: heads · (2·C·(F + V) + 4·F·V), C = min(chunk_size, seq_len) (see module doc)."""
    C = max(1, min(chunk_size, seq_len))
    return heads * (2.0 * C * (key_dim + value_dim) + 4.0 * key_dim * value_dim)


def chunked_delta_rule_flops(seq_len: int, chunk_size: int, heads: int, key_dim: int, value_dim: int) -> float:
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


def _attention(m, T: int) -> float:
    return linear_flops(m.qkv) + linear_flops(m.out) + causal_attention_core_flops(T, m.d_model)


def _swa(m, T: int) -> float:
    return linear_flops(m.qkv) + linear_flops(m.out) + window_attention_core_flops(T, m.d_model, m.window_size)


def _default_chunk_size(op) -> int:
    """The chunk size a kernel op uses when the layer does not pass one."""
    return inspect.signature(op).parameters["chunk_size"].default


def _linear_attention(m, T: int) -> float:
    from recall_lm.kernels.ops import gated_linear_attention

    chunk = _default_chunk_size(gated_linear_attention)
    value_dim = m.head_dim + int(m.normalize)
    core = chunked_linear_attention_flops(T, chunk, m.num_heads, m.expanded_dim, value_dim)
    return linear_flops(m.qk) + linear_flops(m.v) + linear_flops(m.out) + core


def _short_conv(conv) -> float:
    return 2.0 * conv.kernel_size * conv.dim


def _base_conv(m, T: int) -> float:
    if m.variant == "zoology":
        return linear_flops(m.projection) + _short_conv(m.conv)
    return linear_flops(m.in_proj) + linear_flops(m.out_proj) + _short_conv(m.conv)


def _retnet(m, T: int) -> float:
    projections = sum(linear_flops(p) for p in (m.q_proj, m.k_proj, m.v_proj, m.g_proj, m.o_proj))
    return projections + chunked_linear_attention_flops(T, m.chunk_size, m.num_heads, m.head_k_dim, m.head_v_dim)


def _rwkv6(m, T: int) -> float:
    projections = sum(linear_flops(p) for p in (m.receptance, m.key, m.value, m.gate, m.output))
    lora = 2.0 * m.time_maa_w1.numel() + 2.0 * m.time_maa_w2.numel()  # x·W1 [C, 5r], then 5 × (r → C)
    decay_lora = 2.0 * m.time_decay_w1.numel() + 2.0 * m.time_decay_w2.numel()
    core = chunked_linear_attention_flops(T, m.chunk_size, m.num_heads, m.head_size, m.head_size)
    return projections + lora + decay_lora + core


def _mom(m, T: int) -> float:
    from recall_lm.kernels.ops import gated_delta_rule, gated_linear_attention

    H, K, V = m.num_heads, m.head_dim, m.value_dim
    d = m.d_model
    slots = m.top_k + int(m.shared_memory)  # memories each token is written to and read from
    per_slot = 2.0 * d * sum(m.widths)  # its k, v and gate logits from that memory's weights
    chunk = _default_chunk_size(gated_linear_attention if m.memory == "gla" else gated_delta_rule)
    routed_len = max(1, round(T * m.top_k / m.num_memories))  # mean length of a (sequence, memory) stream
    memory_flops = chunked_linear_attention_flops if m.memory == "gla" else chunked_delta_rule_flops
    core = m.top_k * memory_flops(routed_len, chunk, H, K, V)
    if m.shared_memory:
        core += memory_flops(T, chunk, H, K, V)
    total = linear_flops(m.router) + linear_flops(m.q) + slots * per_slot + core
    total += linear_flops(m.out_gate) + linear_flops(m.out)
    if m.short_conv:
        total += _short_conv(m.q_conv) + slots * (_short_conv(m.k_conv) + _short_conv(m.v_conv))
    return total


def _swiglu(m, T: int) -> float:
    return linear_flops(m.gate_up) + linear_flops(m.down)


def _rwkv6_cmix(m, T: int) -> float:
    return linear_flops(m.key) + linear_flops(m.value) + linear_flops(m.receptance)


def _rules() -> dict[type, Callable[[nn.Module, int], float]]:
    from recall_lm.layers.attention import Attention
    from recall_lm.layers.base_conv import BaseConv
    from recall_lm.layers.linear_attention import LinearAttention
    from recall_lm.layers.mlp import IdentityMLP, SwiGLU
    from recall_lm.layers.mom import MixtureOfMemories
    from recall_lm.layers.retnet import MultiScaleRetention
    from recall_lm.layers.rwkv6 import RWKV6ChannelMix, RWKV6TimeMix
    from recall_lm.layers.swa import SlidingWindowAttention

    return {
        Attention: _attention, SlidingWindowAttention: _swa, LinearAttention: _linear_attention,
        BaseConv: _base_conv, MultiScaleRetention: _retnet, RWKV6TimeMix: _rwkv6,
        MixtureOfMemories: _mom, SwiGLU: _swiglu, RWKV6ChannelMix: _rwkv6_cmix,
        IdentityMLP: lambda m, T: 0.0,
    }


def module_flops_per_token(module: nn.Module, seq_len: int) -> float:
    """Forward FLOPs per token of one mixer or MLP at training length ``seq_len``."""
    if seq_len < 1:
        raise ValueError(f"seq_len must be ≥ 1, got {seq_len}")
    own = getattr(module, "flops_per_token", None)
    if callable(own):
        return float(own(seq_len))
    for cls in type(module).__mro__:  # the most specific rule (BASED uses LinearAttention's)
        rule = _rules().get(cls)
        if rule is not None:
            return float(rule(module, seq_len))
    raise ValueError(f"no FLOPs rule for {type(module).__name__}: give it a flops_per_token(seq_len) "
                     "method or add a rule to models/flops.py")


def model_flops_per_token(model: nn.Module, seq_len: int) -> float:
    """Forward FLOPs per token of a DecoderLM: every block's mixer and MLP, plus the LM head."""
    total = linear_flops(model.head)
    for block in model.blocks:
        total += module_flops_per_token(block.mixer, seq_len)
        if block.mlp is not None:
            total += module_flops_per_token(block.mlp, seq_len)
    return total


def training_flops_per_token(model: nn.Module, seq_len: int) -> float:
    """Forward + backward: 3 × the forward (the backward computes two products per forward one)."""
    return 3.0 * model_flops_per_token(model, seq_len)


# Dense bf16 tensor-core peak FLOP/s per device (no sparsity), by a substring of the device name.
PEAK_FLOPS_BF16 = {
    "H200": 989e12, "H100": 989e12, "H800": 989e12, "GH200": 989e12,
    "B200": 2250e12, "A100": 312e12, "A800": 312e12, "L40S": 362e12, "L4": 121e12,
    "A10G": 70e12, "RTX 4090": 165e12, "RTX 3090": 71e12, "V100": 125e12, "T4": 65e12,
}


def peak_flops_for(device_name: str | None) -> float | None:
    """The table's bf16 peak for a CUDA device name (e.g. "NVIDIA H100 80GB HBM3"), else None."""
    if not device_name:
        return None
    for key in sorted(PEAK_FLOPS_BF16, key=len, reverse=True):  # "GH200" before "H200"
        if key in device_name:
            return PEAK_FLOPS_BF16[key]
    return None
