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

Every mixer and MLP counts its own (``flops_per_token(seq_len)``, part of the mixer contract in
recall_lm.layers.contract), from the pieces in recall_lm.layers.flops; this module adds them up.
"""
from __future__ import annotations

from torch import nn

from recall_lm.layers.flops import linear_flops


def module_flops_per_token(module: nn.Module, seq_len: int) -> float:
    """Forward FLOPs per token of one mixer or MLP at training length ``seq_len`` (its own
    ``flops_per_token``, part of the mixer contract)."""
    if seq_len < 1:
        raise ValueError(f"seq_len must be ≥ 1, got {seq_len}")
    return float(module.flops_per_token(seq_len))


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
