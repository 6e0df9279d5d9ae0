"""evals.bench_kernels end to end at a tiny size: rows for every op, the settings it ran under, and the
summary lines against SDPA."""
from evals import bench_kernels


def test_tiny_run_writes_rows_settings_and_ratios(tmp_path):
    out = tmp_path / "bench.md"
    bench_kernels.main(["--T", "64", "--repeats", "1", "--warmup", "0", "--B", "1", "--H", "2", "--D", "16",
                        "--out", str(out)])
    text = out.read_text()
    for needle in ("malloc: ", "OMP_WAIT_POLICY=", "float32 matmul rate: 512 × 64×64·64×64 ",
                   "| per-channel g (GLA) | torch | 64 | float32 |", "| DPLR delta rule (RWKV-7) | torch | 64 |",
                   "| softmax attention (causal) | torch SDPA | 64 |", "backward/forward",
                   "chunked (torch, per-channel g (GLA)) vs SDPA causal: T=64 forward"):
        assert needle in text, needle
