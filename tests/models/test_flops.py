"""Analytic FLOPs per token (models/flops.py) against torch's FlopCounterMode and hand counts."""
from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import recall_lm.layers.rwkv6  # noqa: F401  (registers rwkv6_cmix)
from recall_lm.layers.flops import causal_attention_core_flops, window_attention_core_flops
from recall_lm.layers.mlp import build_mlp
from recall_lm.layers.registry import build_mixer
from recall_lm.models.config import ModelConfig
from recall_lm.models.decoder import DecoderLM
from recall_lm.models.flops import model_flops_per_token, module_flops_per_token, peak_flops_for

D, T = 64, 256


def counted_per_token(module, x, *args) -> dict[str, float]:
    """FlopCounterMode's FLOPs per token of one forward, per aten op name."""
    with FlopCounterMode(display=False) as counter:
        module(x, *args)
    return {str(op): n / x.shape[1] for op, n in counter.get_flop_counts()["Global"].items()}


def test_projection_only_modules_match_the_flop_counter_exactly():
    x = torch.randn(1, T, D)
    for module, args in ((build_mixer("base_conv", D, kernel_size=3), (None,)),
                         (build_mlp("swiglu", D), ()), (build_mlp("rwkv6_cmix", D), (None,))):
        assert module_flops_per_token(module, T) == sum(counted_per_token(module, x, *args).values())


@pytest.mark.parametrize("name, kwargs, core", [
    ("attention", {"num_heads": 2}, lambda m: causal_attention_core_flops(T, D)),
    ("swa", {"num_heads": 2, "window_size": 16}, lambda m: window_attention_core_flops(T, D, 16)),
])
def test_softmax_attention_projections_match_the_counter_and_the_core_a_hand_count(name, kwargs, core):
    mixer = build_mixer(name, D, **kwargs)
    counted = counted_per_token(mixer, torch.randn(1, T, D))
    # the counter sees the projections as aten.mm (the CPU SDPA / banded kernel are counted by hand)
    assert module_flops_per_token(mixer, T) - core(mixer) == counted["aten.mm"]
    # hand count of the core: query t sees min(t + 1, w) keys, 2·D FLOPs for its score and 2·D for its value
    window = kwargs.get("window_size", T)
    visible = sum(min(t + 1, window) for t in range(T))
    assert core(mixer) == pytest.approx(4 * D * visible / T)


@pytest.mark.parametrize("name, kwargs", [
    ("linear_attention", {"num_heads": 2, "feature_dim": 16}),
    ("based", {"num_heads": 2, "feature_dim": 8}),
    ("retnet", {"num_heads": 2}),
    ("rwkv6", {"head_size": 32, "mix_lora_rank": 8, "decay_lora_rank": 16}),
    ("mom", {"num_heads": 2, "num_memories": 4, "top_k": 2, "memory": "gla"}),
    # one memory: one segment per sequence, so the torch varlen path pads nothing (with several
    # memories it pads every packed segment to the longest, compute the analytic count leaves out)
    ("mom", {"num_heads": 2, "num_memories": 1, "top_k": 1, "shared_memory": False}),
    ("deltanet", {"num_heads": 2}),
    ("gated_deltanet", {"num_heads": 2}),
    ("mamba2", {"d_state": 16, "head_dim": 32}),
])
def test_chunked_mixers_are_close_to_the_flop_counter(name, kwargs):
    """The torch backend's matmuls. The counter misses the state read q·S (an in-place
    ``baddbmm_``, which FlopCounterMode does not count: 2·F·V per token and head, 6-13% here), so
    the analytic count may exceed the counted one by that much, and never falls far below it."""
    torch.manual_seed(0)
    mixer = build_mixer(name, D, **kwargs)
    counted = sum(counted_per_token(mixer, torch.randn(1, T, D)).values())
    ours = module_flops_per_token(mixer, T)
    assert -0.06 < ours / counted - 1 < 0.15, (ours, counted)


def test_decoder_flops_sum_blocks_and_head_and_training_is_three_times():
    config = ModelConfig(
        vocab_size=100, d_model=D, n_layers=3, mixer=["attention", "retnet", "swa"], mlp="swiglu"
    )
    model = DecoderLM(config)
    expected = 2 * D * 100 + sum(module_flops_per_token(b.mixer, T) + module_flops_per_token(b.mlp, T)
                                 for b in model.blocks)
    assert model.flops_per_token(T) == expected == model_flops_per_token(model, T)
    assert model.flops_per_token(T, training=True) == 3 * expected
    # attention's cost grows with the length, a sliding window's stops growing past the window
    assert model.flops_per_token(2 * T) > model.flops_per_token(T)
    swa = build_mixer("swa", D, window_size=16)
    assert module_flops_per_token(swa, 4096) == pytest.approx(module_flops_per_token(swa, 8192), rel=1e-2)


def test_bad_input_and_unknown_modules_fail_clearly():
    with pytest.raises(ValueError, match="seq_len"):
        module_flops_per_token(build_mlp("swiglu", D), 0)


def test_peak_flops_table():
    assert peak_flops_for("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops_for("NVIDIA H200") == 989e12
    assert peak_flops_for("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops_for("cpu") is None and peak_flops_for(None) is None
