"""Our ``kda`` and ``gated_deltaproduct`` layers against fla's ``KimiDeltaAttention`` and
``GatedDeltaProduct`` given the same weights: the output and the gradients of the input and of every
parameter, fp32, at an odd T (a whole-chunk T and more options marked slow). fla's layers run its Triton
kernels, so the comparison runs in a child process under the interpreter (tests/fla_files.py):
``TRITON_INTERPRET=1 python -m tests.layers.test_kda_fla [slow]``. Our layers' state is key-major, fla's
KDA keeps it value-major: only outputs and gradients are compared here (states: tests/kernels/test_kda.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.fla_files import assert_matches_fla

CONV_NAMES = {f"{c}_conv.conv.weight": f"{c}_conv1d.weight" for c in "qkv"}  # ours -> fla's
CASES = {  # name: (ours, T, our options, slow); d_model 32, 2 heads of 16
    "kda_T37": ("kda", 37, {}, False),
    "kda_T64_sigmoid_gate_neg_eigval": (
        "kda",
        64,
        {"gate": "sigmoid", "lower_bound": -3.0, "allow_neg_eigval": True},
        True,
    ),
    "kda_T40_no_conv_expand_v2": ("kda", 40, {"use_short_conv": False, "expand_v": 2}, True),
    "gdp_T37": ("gated_deltaproduct", 37, {}, False),
    "gdp_T33_nh3_no_forget_no_gate": (
        "gated_deltaproduct",
        33,
        {"num_householder": 3, "use_forget_gate": False, "output_gate": False},
        True,
    ),
    "gdp_T64_nh1_no_neg_eigval_expand_v2": (
        "gated_deltaproduct",
        64,
        {"num_householder": 1, "allow_neg_eigval": False, "expand_v": 2},
        True,
    ),
}


def fla_layer(name: str, d: int, H: int, options: dict):
    from fla.layers import GatedDeltaProduct as FlaGatedDeltaProduct
    from fla.layers import KimiDeltaAttention as FlaKimiDeltaAttention

    common = dict(
        hidden_size=d,
        head_dim=d // H,
        num_heads=H,
        expand_v=options.get("expand_v", 1),
        use_short_conv=options.get("use_short_conv", True),
        conv_size=4,
    )
    if name == "kda":
        sigmoid = options.get("gate") == "sigmoid"
        return FlaKimiDeltaAttention(
            **common,
            allow_neg_eigval=options.get("allow_neg_eigval", False),
            lower_bound=options["lower_bound"] if sigmoid else None,
        )
    return FlaGatedDeltaProduct(
        **common,
        num_householder=options.get("num_householder", 2),
        use_forget_gate=options.get("use_forget_gate", True),
        allow_neg_eigval=options.get("allow_neg_eigval", True),
        use_output_gate=options.get("output_gate", True),
    )


def allow_fp32_gated_delta_product():
    """fla's ``chunk_gated_delta_product`` asserts bf16 inputs (on GPUs its fp32 path is not supported);
    under the interpreter bf16 arithmetic is wrong and fp32 is exact, so the layer calls its autograd
    Function directly, with the same arguments the wrapper passes."""
    import fla.layers.gated_deltaproduct as layer_module
    from fla.ops.gated_delta_product.chunk import ChunkGatedDeltaProductFunction

    def chunk_fp32(
        q,
        k,
        v,
        g,
        beta,
        scale=None,
        initial_state=None,
        output_final_state=False,
        cu_seqlens=None,
        num_householder=1,
        use_qk_l2norm_in_kernel=False,
        **_,
    ):
        scale = k.shape[-1] ** -0.5 if scale is None else scale
        return ChunkGatedDeltaProductFunction.apply(
            q,
            k,
            v,
            g,
            beta,
            scale,
            num_householder,
            initial_state,
            output_final_state,
            use_qk_l2norm_in_kernel,
            cu_seqlens,
            None,
            None,
        )

    layer_module.chunk_gated_delta_product = chunk_fp32


def compare(slow: bool) -> dict:
    """Max differences per tensor relative to fla's largest entry of it, per case."""
    import warnings

    warnings.filterwarnings("ignore")
    import torch

    from recall_lm.layers.registry import build_mixer
    from tests.fla_files import copy_weights_and_compare, install_fla_interpreter_shims

    fla_layer("kda", 32, 2, {})  # imports fla's ops before the shims patch them
    install_fla_interpreter_shims()
    allow_fp32_gated_delta_product()
    torch.set_num_threads(1)
    d, H = 32, 2
    out = {}
    for case, (name, T, options, is_slow) in CASES.items():
        if is_slow and not slow:
            continue
        torch.manual_seed(T)
        fla = fla_layer(name, d, H, options)
        ours = build_mixer(name, d, num_heads=H, **options)
        x, dy = torch.randn(2, T, d), torch.randn(2, T, d)
        randomise = ("conv1d.weight", "o_norm.weight", ".bias")  # zero-ish convs, unit norms, zero bias
        out[case] = copy_weights_and_compare(fla, ours, x, dy, CONV_NAMES, randomise)
    return out


def test_matches_fla_kda_and_gated_deltaproduct_layers():
    assert_matches_fla(Path(__file__).resolve(), 5e-5)


@pytest.mark.slow
def test_matches_fla_kda_and_gated_deltaproduct_layers_every_option():
    assert_matches_fla(Path(__file__).resolve(), 5e-5, "slow")


if __name__ == "__main__":
    print(json.dumps(compare("slow" in sys.argv[1:])))
