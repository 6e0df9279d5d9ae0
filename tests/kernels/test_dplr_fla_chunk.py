"""Our DPLR delta rule against fla's own chunked Triton op ``chunk_dplr_delta_rule``, run under the Triton
interpreter at small shapes: outputs, final state and every gradient (q, k, v, a, b, gk, initial state).
fla's ops need interpreter shims (tests/fla_files.py), so they run in a child process:
``TRITON_INTERPRET=1 python tests/kernels/test_dplr_fla_chunk.py``."""
from __future__ import annotations

import json
from pathlib import Path

from tests.fla_files import run_fla_comparison

ROOT = Path(__file__).resolve().parents[2]


def compare() -> dict:
    import torch
    import torch.nn.functional as F
    from fla.ops.generalized_delta_rule import chunk_dplr_delta_rule

    from recall_lm.kernels.ops import dplr_delta_rule
    from tests.fla_files import install_fla_interpreter_shims

    install_fla_interpreter_shims()
    gen = torch.Generator().manual_seed(0)
    B, T, H, K, V = 1, 70, 2, 16, 16
    kappa = F.normalize(torch.randn(B, T, H, K, generator=gen), dim=-1)
    base = dict(q=torch.randn(B, T, H, K, generator=gen), k=torch.randn(B, T, H, K, generator=gen) / 4,
                v=torch.randn(B, T, H, V, generator=gen), a=-kappa,
                b=kappa * torch.rand(B, T, H, K, generator=gen),
                gk=F.logsigmoid(torch.randn(B, T, H, K, generator=gen)) / 4,
                h0=torch.randn(B, H, K, V, generator=gen))
    do, dht = torch.randn(B, T, H, V, generator=gen), torch.randn(B, H, K, V, generator=gen)
    results = []
    for fn in (chunk_dplr_delta_rule, dplr_delta_rule):
        x = {n: t.clone().requires_grad_() for n, t in base.items()}
        o, s = fn(
            x["q"], x["k"], x["v"], x["a"], x["b"], x["gk"], initial_state=x["h0"], output_final_state=True
        )
        ((o * do).sum() + (s * dht).sum()).backward()
        results.append({"o": o.detach(), "final": s.detach(), **{f"d{n}": t.grad for n, t in x.items()}})
    fla, ours = results
    return {n: (fla[n] - ours[n]).abs().max().item() for n in fla}


def test_matches_fla_chunk_dplr_under_the_interpreter():
    for name, err in run_fla_comparison(Path(__file__).resolve()).items():
        assert err < 5e-4, f"{name}: fla vs ours max abs diff {err:.2e}"


if __name__ == "__main__":
    print(json.dumps(compare()))
