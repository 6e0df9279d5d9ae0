"""Argument checks and backend dispatch of the public gated-linear-attention functions."""
import pytest
import torch

from recall_lm.kernels.ops import gated_linear_attention, gated_linear_attention_step


def _x(B=2, T=8, H=2, K=4, V=3):
    return torch.randn(B, T, H, K), torch.randn(B, T, H, K), torch.randn(B, T, H, V)


@pytest.mark.parametrize("make_args,match", [
    (lambda q, k, v: (q[0], k, v), "q must have 4 dims"),
    (lambda q, k, v: (q, k[..., :3], v), "k must have shape"),
    (lambda q, k, v: (q, k, v[:, :5]), "v must have shape"),
    (lambda q, k, v: (q, k, v, torch.zeros(2, 8, 3)), "g must be a log-decay of shape"),
    (lambda q, k, v: (q, k, v, torch.zeros(2, 8, 2, 5)), "g must be a log-decay of shape"),
    (lambda q, k, v: (q, k, v, None, torch.zeros(2, 5)), "u must have shape"),
    (lambda q, k, v: (q, k.double(), v), "share a dtype"),
])
def test_bad_shapes(make_args, match):
    with pytest.raises(ValueError, match=match):
        gated_linear_attention(*make_args(*_x()))


def test_bad_keywords():
    q, k, v = _x()
    with pytest.raises(ValueError, match="backend must be one of"):
        gated_linear_attention(q, k, v, backend="cuda")
    with pytest.raises(ValueError, match="initial_state must have shape"):
        gated_linear_attention(q, k, v, initial_state=torch.zeros(3, 2, 4, 3))
    with pytest.raises(ValueError, match="chunk_size"):
        gated_linear_attention(q, k, v, chunk_size=48)
    with pytest.raises(ValueError, match="B = 1"):
        gated_linear_attention(q, k, v, cu_seqlens=torch.tensor([0, 8]))
    q1, k1, v1 = _x(B=1)
    with pytest.raises(ValueError, match="end at T = 8"):
        gated_linear_attention(q1, k1, v1, cu_seqlens=torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="integer"):
        gated_linear_attention(q1, k1, v1, cu_seqlens=torch.tensor([0.0, 8.0]))
    with pytest.raises(ValueError, match=r"initial_state must have shape .*N"):
        gated_linear_attention(
            q1, k1, v1, initial_state=torch.zeros(1, 2, 4, 3), cu_seqlens=torch.tensor([0, 3, 8])
        )


def test_triton_on_cpu_without_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="backend='triton' needs CUDA tensors"):
        gated_linear_attention(*_x(), backend="triton")


def test_auto_is_torch_on_cpu(monkeypatch):
    import recall_lm.kernels.gla.chunked_torch as chunked

    calls = []
    original = chunked.chunk_gla_torch
    monkeypatch.setattr(chunked, "chunk_gla_torch", lambda *a, **k: calls.append(1) or original(*a, **k))
    o, s = gated_linear_attention(*_x())
    assert calls and o.shape == (2, 8, 2, 3) and s is None


def test_output_dtype_and_state():
    q, k, v = (t.to(torch.bfloat16) for t in _x())
    o, s = gated_linear_attention(
        q, k, v, torch.full((2, 8, 2), -0.1, dtype=torch.bfloat16), output_final_state=True
    )
    assert o.dtype == torch.bfloat16 and s.dtype == torch.float32 and s.shape == (2, 2, 4, 3)


def test_step_bad_input():
    q, k, v = torch.randn(2, 2, 4), torch.randn(2, 2, 4), torch.randn(2, 2, 3)
    with pytest.raises(ValueError, match="q must have 3 dims"):
        gated_linear_attention_step(q[None], k, v)
    with pytest.raises(ValueError, match="g must have shape"):
        gated_linear_attention_step(q, k, v, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="state must have shape"):
        gated_linear_attention_step(q, k, v, None, None, torch.zeros(2, 2, 4, 4))
