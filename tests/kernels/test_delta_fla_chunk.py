"""Our gated delta rule against fla's own chunked Triton op ``chunk_gated_delta_rule``, run under the
Triton interpreter at small shapes: outputs, final state and every gradient, with a decay and without
(our g=None against fla's with g = 0: fla's ``chunk_delta_rule`` refuses fp32). fla's ops need two
interpreter shims (tests/fla_files.py), so they run in a child process:
``TRITON_INTERPRET=1 python tests/kernels/test_delta_fla_chunk.py``."""
from __future__ import annotations

import json
from pathlib import Path

from tests.fla_files import assert_matches_fla

ROOT = Path(__file__).resolve().parents[2]


def compare() -> dict:
    """Max abs differences (ours torch backend vs fla chunk), per tensor, for DeltaNet and Gated DeltaNet."""
    import torch
    import torch.nn.functional as F
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    from recall_lm.kernels.ops import gated_delta_rule
    from tests.fla_files import install_fla_interpreter_shims

    install_fla_interpreter_shims()
    gen = torch.Generator().manual_seed(0)
    B, T, H, K, V = 1, 70, 2, 16, 16
    base = dict(
        q=torch.randn(B, T, H, K, generator=gen),
        k=F.normalize(torch.randn(B, T, H, K, generator=gen), dim=-1),
        v=torch.randn(B, T, H, V, generator=gen),
        beta=torch.rand(B, T, H, generator=gen),
        g=F.logsigmoid(torch.randn(B, T, H, generator=gen)),
        h0=torch.randn(B, H, K, V, generator=gen),
    )
    do, dht = torch.randn(B, T, H, V, generator=gen), torch.randn(B, H, K, V, generator=gen)
    out = {}
    for gated in (True, False):
        results = []
        for impl in ("fla", "ours"):
            x = {n: t.clone().requires_grad_() for n, t in base.items() if gated or n != "g"}
            if impl == "fla":
                g = x["g"] if gated else torch.zeros_like(x["beta"])
                o, s = chunk_gated_delta_rule(x["q"], x["k"], x["v"], g, x["beta"], initial_state=x["h0"],
                                              output_final_state=True)
            else:
                o, s = gated_delta_rule(x["q"], x["k"], x["v"], x["beta"], x.get("g"), initial_state=x["h0"],
                                        output_final_state=True, backend="torch")
            ((o * do).sum() + (s * dht).sum()).backward()
            results.append({"o": o.detach(), "final": s.detach(), **{f"d{n}": t.grad for n, t in x.items()}})
        fla, ours = results
        out["gated" if gated else "plain"] = {n: (fla[n] - ours[n]).abs().max().item() for n in fla}
    return out


def test_matches_fla_chunk_ops_under_the_interpreter():
    assert_matches_fla(Path(__file__).resolve(), 2e-4)


if __name__ == "__main__":
    print(json.dumps(compare()))
