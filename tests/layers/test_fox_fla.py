"""Our ``fox`` layer against fla's ``ForgettingAttention`` given the same weights: the output and the
gradients of the input and of every parameter, fp32, at an odd T (more options marked slow). fla's layer
runs its Triton attention kernel, so the comparison runs in a child process under the interpreter
(tests/fla_files.py): ``TRITON_INTERPRET=1 python -m tests.layers.test_fox_fla [slow]``. The same child
compares the op, ours on both backends against fla's ``parallel_forgetting_attn``. The Pro parts fla
lacks (``output_norm``, ``kv_shift``) are off here; tests/layers/test_fox.py checks them against the
paper's equations. ``window_size`` is not compared: fla 0.6.0's layer keeps it for its decoding cache but
does not pass it to ``parallel_forgetting_attn`` in its forward, so it trains without a window (the op
with a window is compared with fla's in tests/kernels/test_forgetting_attn.py). The gradient of k's bias
is zero in exact arithmetic (it shifts each query's scores by one constant) and is left out: its
round-off relative to itself means nothing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.fla_files import assert_matches_fla

CASES = {  # name: (T, our options, slow); d_model 32, 2 heads of 16
    "T37": (37, {}, False),
    "T64_qk_norm_output_gate": (64, {"qk_norm": True, "output_gate": True}, True),
    "T45_gqa_bias": (45, {"num_heads": 4, "num_kv_heads": 2, "qkv_bias": True}, True),
}


def compare(slow: bool) -> dict:
    """Max differences per tensor relative to fla's largest entry of it, per case."""
    import warnings

    warnings.filterwarnings("ignore")
    import torch
    from fla.layers import ForgettingAttention as FlaForgettingAttention

    from recall_lm.layers.registry import build_mixer
    from tests.fla_files import copy_weights_and_compare, install_fla_interpreter_shims

    install_fla_interpreter_shims()
    torch.set_num_threads(1)
    d = 32
    out = {}
    for case, (T, options, is_slow) in CASES.items():
        if is_slow and not slow:
            continue
        torch.manual_seed(T)
        options = {"num_heads": 2, **options}
        fla = FlaForgettingAttention(
            hidden_size=d, num_heads=options["num_heads"], num_kv_heads=options.get("num_kv_heads"),
            qkv_bias=options.get("qkv_bias", False), qk_norm=options.get("qk_norm", False),
            window_size=options.get("window_size"), use_output_gate=options.get("output_gate", False))
        ours = build_mixer("fox", d, **options)
        x, dy = torch.randn(2, T, d), torch.randn(2, T, d)
        diffs = copy_weights_and_compare(fla, ours, x, dy, {}, ("norm.weight", ".bias"))
        diffs.pop("dk_proj.bias", None)
        out[case] = diffs
    out.update(compare_ops())
    return out


def compare_ops() -> dict:
    """The op: fla's ``parallel_forgetting_attn`` against ours on both backends (torch, triton), outputs
    and the gradients of q, k, v and g, with GQA, a window and packed sequences."""
    import torch
    from fla.ops.forgetting_attn.parallel import parallel_forgetting_attn

    from recall_lm.kernels.ops import forgetting_attention

    out = {}
    torch.manual_seed(0)
    for case, (B, HQ, H, window, cu) in {
        "op_T45_gqa": (2, 4, 2, None, None),
        "op_T45_window9": (2, 2, 2, 9, None),
        "op_T45_packed": (1, 2, 2, None, torch.tensor([0, 7, 30, 45])),
    }.items():
        q, k, v = torch.randn(B, 45, HQ, 16), torch.randn(B, 45, H, 16), torch.randn(B, 45, H, 16)
        g = torch.nn.functional.logsigmoid(torch.randn(B, 45, HQ) + 2)
        do = torch.randn(B, 45, HQ, 16)
        results = {}
        options = dict(window_size=window, cu_seqlens=cu)
        for name, fn in {
            "fla": lambda *x: parallel_forgetting_attn(*x, **options),
            "torch": lambda *x: forgetting_attention(*x, **options, backend="torch"),
            "triton": lambda *x: forgetting_attention(*x, **options, backend="triton"),
        }.items():
            inputs = [t.clone().requires_grad_() for t in (q, k, v, g)]
            o = fn(*inputs)
            results[name] = [o.detach(), *torch.autograd.grad((o * do).sum(), inputs)]
        for ours in ("torch", "triton"):
            out[f"{case}_{ours}"] = {
                n: ((w - o).abs().max() / w.abs().max()).item()
                for n, w, o in zip(("o", "dq", "dk", "dv", "dg"), results["fla"], results[ours])
            }
    return out


def test_matches_fla_forgetting_attention():
    assert_matches_fla(Path(__file__).resolve(), 5e-5)


@pytest.mark.slow
def test_matches_fla_forgetting_attention_every_option():
    assert_matches_fla(Path(__file__).resolve(), 5e-5, "slow")


if __name__ == "__main__":
    print(json.dumps(compare("slow" in sys.argv[1:])))
