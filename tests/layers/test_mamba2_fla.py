"""Our ``mamba2`` layer against fla's ``fla.layers.Mamba2`` (its torch path: the chunked SSD scan in
PyTorch, gated RMSNorm in Triton) given the same weights: outputs and the gradients of the input and
of every parameter, at odd and whole-chunk T. One group only: with n_groups > 1 fla's torch prefill
path gives head h the group h mod G (``B.repeat``), while its own decode path and mamba_ssm's kernels
give it group ⌊h / (H/G)⌋, which is ours (checked against the SSD recurrence in test_mamba2.py).
fla's Triton norm needs the interpreter shims
(tests/fla_files.py), so the comparison runs in a child process:
``TRITON_INTERPRET=1 python tests/layers/test_mamba2_fla.py``."""
from __future__ import annotations

import json
from pathlib import Path

from tests.fla_files import assert_matches_fla

ROOT = Path(__file__).resolve().parents[2]
FLA_NAMES = {"conv.conv.weight": "conv1d.weight", "conv.conv.bias": "conv1d.bias"}  # ours -> fla's


def compare() -> dict:
    """Max abs differences per tensor (output, input gradient, parameter gradients) per case."""
    import warnings

    warnings.filterwarnings("ignore")
    import torch
    from fla.layers import Mamba2 as FlaMamba2

    from recall_lm.layers.registry import build_mixer
    from tests.fla_files import install_fla_interpreter_shims

    install_fla_interpreter_shims()
    out = {}
    for T, groups in ((37, 1), (64, 1)):
        torch.manual_seed(0)
        d, N, P = 64, 16, 32
        fla = FlaMamba2(
            head_dim=P, hidden_size=d, state_size=N, expand=2, n_groups=groups, chunk_size=16
        ).double()
        ours = build_mixer("mamba2", d, d_state=N, head_dim=P, n_groups=groups, chunk_size=16).double()
        fla_params = dict(fla.named_parameters())
        with torch.no_grad():
            for name, p in ours.named_parameters():
                p.copy_(fla_params[FLA_NAMES.get(name, name)])
        x = torch.randn(2, T, d, dtype=torch.float64)
        dy = torch.randn(2, T, d, dtype=torch.float64)
        grads = []
        for module, run in ((fla, lambda x: fla(x)[0]), (ours, lambda x: ours(x)[0])):
            xi = x.clone().requires_grad_()
            y = run(xi)
            (y * dy).sum().backward()
            named = (
                {FLA_NAMES.get(n, n): p.grad for n, p in module.named_parameters()}
                if module is ours
                else {n: p.grad for n, p in module.named_parameters()}
            )
            grads.append({"y": y.detach(), "dx": xi.grad, **{f"d{n}": g for n, g in named.items()}})
        want, got = grads
        out[f"T{T}_groups{groups}"] = {n: (want[n] - got[n]).abs().max().item() for n in want}
    return out


def test_matches_fla_mamba2_layer():
    assert_matches_fla(Path(__file__).resolve(), 1e-5)


if __name__ == "__main__":
    print(json.dumps(compare()))
