"""recall_lm.evals.bench.kernels end to end at a tiny size: rows for every op, the settings it ran under,
and the summary lines against SDPA."""
import pytest

from recall_lm.evals.bench import kernels as bench_kernels


def test_tiny_run_writes_rows_settings_and_ratios(tmp_path):
    out = tmp_path / "bench.md"
    bench_kernels.main(["--T", "64", "--repeats", "1", "--warmup", "0", "--B", "1", "--H", "2", "--D", "16",
                        "--out", str(out)])
    text = out.read_text()
    for needle in (
        "- command: `python -m recall_lm.evals.bench.kernels --T 64 --repeats 1",
        "malloc: ",
        "OMP_WAIT_POLICY=",
        "float32 matmul rate: 512 × 64×64·64×64 ",
        "| per-channel g (GLA) | torch | 64 | float32 |",
        "| DPLR delta rule (RWKV-7) | torch | 64 |",
        "| KDA (per-channel gated delta rule) | torch | 64 |",
        "| KDA (per-channel gated delta rule) | torch, DPLR path (a = α ⊙ k, b = −β k) | 64 |",
        "| Gated DeltaProduct (n_h = 2, delta rule over 2T) | torch | 64 |",
        "| Mamba-3 trapezoidal, SISO | torch | 64 |",
        "| Mamba-3 trapezoidal, MIMO R=4 | torch | 64 |",
        "| softmax attention (causal) | torch SDPA | 64 |",
        "| forgetting attention (FoX) | torch | 64 | float32 |",
        "- forgetting attention (FoX), torch at T=64: forward",
        "| log-linear attention (Mamba-2 form) | torch | 64 | float32 |",
        "- log-linear attention (Mamba-2 form), torch at T=64: forward+backward",
        "backward/forward",
        "- KDA (per-channel gated delta rule), its own chunked path vs the DPLR path (same inputs, same",
        "chunked (torch, per-channel g (GLA)) vs SDPA causal: T=64 forward",
    ):
        assert needle in text, needle


def test_every_case_is_timed_in_each_round_in_turn():
    """Rounds interleave the ops (a, b, a, b, ...), so a slow spell of the machine lands on both."""
    import torch

    calls = []

    def case(name):
        def call(x):
            calls.append((name, torch.is_grad_enabled()))
            return (x * 2,)
        return bench_kernels.Case(name, "torch", lambda: (torch.ones(3),), call)

    s = bench_kernels.Settings(torch.device("cpu"), [8], repeats=3, warmup=1)
    times = bench_kernels.time_cases([case("a"), case("b")], s)
    assert len(times) == 2 and all(fwd > 0 and fb > 0 for fwd, fb in times)
    setup, rounds = calls[:4], calls[4:]  # set-up: one call to size each output gradient, one backward
    assert setup == [("a", False), ("a", True), ("b", False), ("b", True)]
    assert rounds == [("a", False), ("a", True), ("b", False), ("b", True)] * 4  # 1 warm-up + 3 timed rounds


def test_a_case_that_fails_is_reported_and_the_others_still_timed():
    import math

    import pytest
    import torch

    def broken(x):
        raise MemoryError("too big")

    good = bench_kernels.Case("good", "torch", lambda: (torch.ones(3),), lambda x: (x * 2,))
    bad = bench_kernels.Case("bad", "torch", lambda: (torch.ones(3),), broken)
    s = bench_kernels.Settings(torch.device("cpu"), [8], repeats=2, warmup=0)
    errors = []
    (fwd, fb), (bad_fwd, bad_fb) = bench_kernels.time_cases([good, bad], s, errors)
    assert fwd > 0 and fb > 0 and math.isnan(bad_fwd) and math.isnan(bad_fb)
    assert errors[0] is None and isinstance(errors[1], MemoryError)
    with pytest.raises(MemoryError):  # without an error list, a failure is not hidden
        bench_kernels.time_cases([good, bad], s)


@pytest.mark.parametrize("argv, message", [
    (["--sections", "nosuch"], "unknown --sections ['nosuch']"),
    (["--repeats", "0"], "--repeats must be ≥ 1"),
    (["--T", "0"], "every --T ≥ 1"),
])
def test_bad_arguments_stop_before_writing(tmp_path, capsys, argv, message):
    out = tmp_path / "bench.md"
    with pytest.raises(SystemExit):
        bench_kernels.main([*argv, "--out", str(out)])
    assert message in capsys.readouterr().err and not out.exists()
