"""Our ``deltanet`` / ``gated_deltanet`` layers against fla's ``DeltaNet`` / ``GatedDeltaNet`` given the
same weights: the output and the gradients of the input and of every parameter, fp32, at odd and
whole-chunk T, with and without short convolutions, negative eigenvalues, the output gate, and value
heads twice as wide as the keys (fla's Gated DeltaNet default ``expand_v=2``). fla's layers run its
Triton kernels, so the comparison runs in a child process under the interpreter (tests/fla_files.py):
``TRITON_INTERPRET=1 python tests/layers/test_deltanet_fla.py``."""
from __future__ import annotations

import json
from pathlib import Path

from tests.fla_files import assert_matches_fla

ROOT = Path(__file__).resolve().parents[2]
CONV_NAMES = {f"{c}_conv.conv.weight": f"{c}_conv1d.weight" for c in "qkv"}  # ours -> fla's
CASES = {  # name: (gated, T, our options); d_model 32, 2 heads
    "deltanet_T37": (False, 37, {}),
    "deltanet_T40_no_conv_neg_eigval": (False, 40, {"use_short_conv": False, "allow_neg_eigval": True}),
    "gated_T64": (True, 64, {}),
    "gated_T37_expand_v2": (True, 37, {"expand_v": 2}),
    "gated_T40_no_gate_neg_eigval": (True, 40, {"output_gate": False, "allow_neg_eigval": True}),
}


def compare() -> dict:
    """Max differences per tensor relative to fla's largest entry of it, per case."""
    import warnings

    warnings.filterwarnings("ignore")
    import torch
    from fla.layers import DeltaNet as FlaDeltaNet
    from fla.layers import GatedDeltaNet as FlaGatedDeltaNet

    from recall_lm.layers.registry import build_mixer
    from tests.fla_files import copy_weights_and_compare, install_fla_interpreter_shims

    install_fla_interpreter_shims()
    torch.set_num_threads(1)
    d, H = 32, 2
    out = {}
    for case, (gated, T, options) in CASES.items():
        torch.manual_seed(T)
        conv, neg = options.get("use_short_conv", True), options.get("allow_neg_eigval", False)
        if gated:
            fla = FlaGatedDeltaNet(
                hidden_size=d,
                head_dim=d // H,
                num_heads=H,
                expand_v=options.get("expand_v", 1),
                use_gate=options.get("output_gate", True),
                use_short_conv=conv,
                allow_neg_eigval=neg,
                conv_size=4,
            )
        else:
            fla = FlaDeltaNet(
                hidden_size=d, num_heads=H, use_short_conv=conv, allow_neg_eigval=neg, conv_size=4
            )
        ours = build_mixer("gated_deltanet" if gated else "deltanet", d, num_heads=H, **options)
        x, dy = torch.randn(2, T, d), torch.randn(2, T, d)
        out[case] = copy_weights_and_compare(fla, ours, x, dy, CONV_NAMES)
    return out


def test_matches_fla_deltanet_and_gated_deltanet_layers():
    assert_matches_fla(Path(__file__).resolve(), 5e-5)


if __name__ == "__main__":
    print(json.dumps(compare()))
