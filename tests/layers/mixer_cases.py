"""Small constructor arguments for every registered mixer, so generic protocol tests cover them all.

A newly registered mixer must add its cases here (test_every_mixer_has_a_case fails otherwise).
"""
D_MODEL = 32

MIXER_CASES: dict[str, list[dict]] = {
    "attention": [
        {"num_heads": 2},
        {"num_heads": 2, "rotary": False, "bias": True, "dropout": 0.1},
        {"num_heads": 4, "rotary": False, "hard_alibi_heads": 2},
    ],
    "linear_attention": [
        {"num_heads": 2, "feature_map": "elu"},
        {"num_heads": 2, "feature_map": "taylor", "feature_dim": 4},
        {"num_heads": 1, "feature_map": "identity", "normalize": False},
    ],
    "based": [{"num_heads": 2, "feature_dim": 4}, {"num_heads": 1, "feature_dim": 3, "symmetric": False}],
    "base_conv": [
        {"kernel_size": 3},
        {"kernel_size": 4, "expand": 4, "activation": None, "bias": False},
        {"kernel_size": 24},  # a long filter (Zoology's gated convolutions): longer than most documents
        {"variant": "zoology", "activation": None},
        {"variant": "zoology", "activation": None, "kernel_size": 4, "bias": False},
    ],
    "fox": [
        {"num_heads": 2},
        {"num_heads": 4, "num_kv_heads": 2, "qk_norm": True, "output_gate": True, "window_size": 7},
        {"num_heads": 2, "output_norm": True, "output_gate": True, "kv_shift": True, "qkv_bias": True},
        {"num_heads": 2, "kv_shift": True, "window_size": 5},
    ],
    "swa": [
        {"num_heads": 2, "window_size": 8},
        {"num_heads": 1, "window_size": 64},
        {"num_heads": 1, "window_size": 8, "rotary": False, "bias": True},
    ],
    "mom": [
        {"num_heads": 2},
        {"num_memories": 3, "top_k": 1, "shared_memory": False, "output_gate": False, "expand_v": 2},
        {"num_memories": 3, "top_k": 3},
        {"num_memories": 1, "top_k": 1, "shared_memory": False, "short_conv": False},
        {"num_heads": 2, "short_conv": True, "conv_size": 3, "allow_neg_eigval": True},
        {"num_heads": 2, "memory": "gla", "short_conv": False},
        {"num_memories": 3, "top_k": 1, "shared_memory": False, "short_conv": True, "memory": "gla"},
    ],
    "deltanet": [
        {"num_heads": 2},
        {
            "num_heads": 1,
            "head_dim": 8,
            "use_short_conv": False,
            "qk_norm": "none",
            "allow_neg_eigval": True,
            "chunk_size": 16,
        },
        {"num_heads": 2, "expand_v": 1.5},
    ],
    "gated_deltanet": [
        {"num_heads": 2},
        {"num_heads": 2, "conv_size": 3, "allow_neg_eigval": True, "chunk_size": 16, "output_gate": False},
        {"num_heads": 2, "expand_v": 2},
    ],
    "gated_deltaproduct": [
        {"num_heads": 2},
        {"num_heads": 2, "num_householder": 3, "use_forget_gate": False, "allow_neg_eigval": False,
         "chunk_size": 16, "output_gate": False},
        {"num_heads": 1, "num_householder": 1, "use_short_conv": False, "expand_v": 2},
    ],
    "kda": [
        {"num_heads": 2},
        {"num_heads": 2, "gate": "sigmoid", "lower_bound": -3.0, "allow_neg_eigval": True, "chunk_size": 16},
        {"num_heads": 1, "head_dim": 8, "use_short_conv": False, "expand_v": 2},
    ],
    "loglinear_mamba2": [
        {"d_state": 8, "head_dim": 16, "chunk_size": 8},
        {"d_state": 4, "head_dim": 8, "expand": 1, "d_conv": 3, "chunk_size": 4, "n_groups": 2,
         "num_levels": 8},
    ],
    "mamba2": [
        {"d_state": 8, "head_dim": 16},
        {"d_state": 4, "head_dim": 8, "expand": 1, "d_conv": 3, "chunk_size": 16, "n_groups": 2},
        {"d_state": 8, "head_dim": 16, "allow_neg_eigval": True},
    ],
    "mamba3": [
        {"d_state": 8, "head_dim": 16},
        {"d_state": 6, "head_dim": 8, "expand": 1, "n_groups": 2, "rope_fraction": 1.0, "outproj_norm": True,
         "chunk_size": 16},
        {"d_state": 8, "head_dim": 16, "mimo": True, "mimo_rank": 2},
        {"d_state": 8, "head_dim": 16, "mimo": True, "mimo_rank": 3, "n_groups": 2, "outproj_norm": True,
         "rope_fraction": 1.0},
    ],
    # standalone, so the first RWKV-7 layer (layer_idx 0); later layers' value residual:
    # tests/layers/test_rwkv7.py
    "rwkv7": [{"head_size": 16, "chunk_size": 16}, {"head_size": 32, "n_layers": 3}],
    "retnet": [{"num_heads": 2}, {"num_heads": 4, "expand_k": 0.5, "expand_v": 1.0}],
    # chunk_size 16: the random 1-D parameters (≈ 1) make decays of up to e^15 per token, where the chunked
    # fp32 kernel's round-off grows with the chunk length (fp64 tests in test_rwkv6.py use chunk 64 too)
    "rwkv6": [
        {
            "head_size": 16,
            "mix_lora_rank": 4,
            "decay_lora_rank": 8,
            "layer_idx": 1,
            "n_layers": 2,
            "chunk_size": 16,
        }
    ],
}


def all_cases() -> list[tuple[str, dict]]:
    return [(name, kwargs) for name, cases in MIXER_CASES.items() for kwargs in cases]


def case_id(case: tuple[str, dict]) -> str:
    name, kwargs = case
    return name + ("-" + "-".join(f"{k}={v}" for k, v in kwargs.items()) if kwargs else "")
