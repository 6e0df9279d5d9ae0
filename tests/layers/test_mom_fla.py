"""Our ``mom`` layer (gated delta-rule memories, shared memory, short convolutions, output gate) against
fla's ``fla.layers.MomAttention`` given the same weights: the output and the gradients of the input and
of every parameter. Two adjustments make the layers comparable, both about fla rather than the maths:
fla sorts the routed tokens with an unstable ``argsort``, which may reorder a memory's tokens in time
(a stable sort here); and fla convolves q per memory over each memory's routed copies, where ours
convolves the shared query once over the token stream (the departure documented in layers/mom.py), so
the q convolution is the identity in both (and only its current tap's gradient is compared: the others
multiply different predecessors). fla runs in eval mode: in training mode its short
convolutions run across the memories' segment boundaries. fla's Triton ops need the interpreter shims
(tests/fla_files.py), so the comparison runs in a child process:
``TRITON_INTERPRET=1 python tests/layers/test_mom_fla.py``."""
from __future__ import annotations

import json
from pathlib import Path

from tests.fla_files import assert_matches_fla

ROOT = Path(__file__).resolve().parents[2]


def _ours_from_fla(fla, M: int, field: str) -> dict:
    """fla's parameters (``field`` "data") or their gradients ("grad") in our layer's names and layout."""
    import torch

    def get(module):
        return getattr(module.weight, field)

    def memory(i):
        parts = (fla.k_proj[i], fla.v_proj[i], fla.b_proj[i], fla.a_proj[i]) if i < M else \
            (fla.shared_k, fla.shared_v, fla.shared_b, fla.shared_a)
        return torch.cat([get(p) for p in parts], 0).T  # [d_model, HK + HV + H + H]

    return {
        "router.weight": get(fla.gate), "q.weight": get(fla.q_proj),
        "kvg_weight": torch.stack([memory(i) for i in range(M + 1)]),
        "A_log": getattr(fla.A_log, field), "dt_bias": getattr(fla.dt_bias, field),
        "norm.weight": get(fla.o_norm), "out_gate.weight": get(fla.g_proj), "out.weight": get(fla.o_proj),
        "q_conv.conv.weight": get(fla.q_conv1d), "k_conv.conv.weight": get(fla.k_conv1d),
        "v_conv.conv.weight": get(fla.v_conv1d),
    }


def compare() -> dict:
    """Max abs differences per tensor (output, input gradient, parameter gradients) per case."""
    import warnings

    warnings.filterwarnings("ignore")
    import torch
    from fla.layers import MomAttention

    from recall_lm.layers.registry import build_mixer
    from tests.fla_files import install_fla_interpreter_shims

    install_fla_interpreter_shims()
    unstable_argsort = torch.Tensor.argsort
    torch.Tensor.argsort = lambda self, dim=-1, descending=False, stable=False: unstable_argsort(
        self, dim=dim, descending=descending, stable=True)
    out = {}
    d, H, M, k = 32, 2, 4, 2
    for T in (37, 64):
        torch.manual_seed(T)
        fla = MomAttention(hidden_size=d, head_dim=d // H, num_heads=H, expand_v=1, num_memories=M, topk=k,
                           shared_mem=True, use_short_conv=True, conv_size=4, use_output_gate=True).eval()
        ours = build_mixer(
            "mom",
            d,
            num_heads=H,
            num_memories=M,
            top_k=k,
            shared_memory=True,
            short_conv=True,
            conv_size=4,
            memory="gated_deltanet",
            aux_loss_coef=0.0,
        )
        with torch.no_grad():
            identity = torch.zeros_like(fla.q_conv1d.weight)
            identity[..., -1] = 1.0
            fla.q_conv1d.weight.copy_(identity)
            for p in (fla.k_conv1d.weight, fla.v_conv1d.weight, fla.o_norm.weight):
                p.add_(0.1 * torch.randn_like(p))  # no symmetric weights that would hide a transposition
            params = dict(ours.named_parameters())
            for name, value in _ours_from_fla(fla, M, "data").items():
                params[name].copy_(value)
            assert set(params) == set(_ours_from_fla(fla, M, "data")), sorted(params)
        x = torch.randn(2, T, d)
        dy = torch.randn(2, T, d)
        results = []
        for run in (lambda x: fla(x)[0], lambda x: ours(x)[0]):
            xi = x.clone().requires_grad_()
            (run(xi) * dy).sum().backward()
            results.append((run(x).detach(), xi.grad))
        grads_fla = _ours_from_fla(fla, M, "grad")
        diffs = {"y": (results[0][0] - results[1][0]).abs().max().item(),
                 "dx": (results[0][1] - results[1][1]).abs().max().item()}
        for name, p in ours.named_parameters():
            want, got = grads_fla[name], p.grad
            if name == "q_conv.conv.weight":  # the other taps see different predecessors (see above)
                name, want, got = "q_conv.conv.weight[current tap]", want[..., -1], got[..., -1]
            diffs[f"d{name}"] = (want - got).abs().max().item()
        out[f"T{T}"] = diffs
    return out


def test_matches_fla_mom_attention():
    assert_matches_fla(Path(__file__).resolve(), 2e-4)


if __name__ == "__main__":
    print(json.dumps(compare()))
