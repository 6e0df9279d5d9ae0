"""recall_lm.kernels.utils.length_buckets / run_padded_varlen: the chunked backends' varlen batching."""
import torch

from recall_lm.kernels.utils import length_buckets
from tests.kernels import delta_testing, gla_testing


def test_buckets_partition_and_bound_the_padding():
    lengths = [1, 2040, 0, 17, 64, 65, 300, 3, 129, 1000]
    groups = length_buckets(lengths, 64)
    assert sorted(n for g in groups for n in g) == list(range(len(lengths)))
    for g in groups:
        chunks = [max(1, -(-lengths[n] // 64)) for n in g]
        assert max(chunks) < 2 * min(chunks) or max(chunks) == 1  # at most ~half of a bucket is padding
    padded = sum(len(g) * max(max(1, -(-lengths[n] // 64)) * 64 for n in g) for g in groups)
    assert padded <= 2 * sum(lengths) + 64 * len(lengths)  # vs len(lengths) * 2048 padding to the longest


def test_varlen_with_an_empty_sequence_and_many_buckets():
    cu = torch.tensor([0, 1, 1, 40, 170, 187])  # lengths 1, 0, 39, 130, 17 at chunk 16: four buckets
    delta_testing.compare_to_naive(delta_testing.make_inputs(B=1, T=187, N=5), "torch", 1e-9, chunk_size=16,
                                   cu_seqlens=cu)
    gla_testing.compare_to_naive(gla_testing.make_inputs(B=1, T=187, N=5, use_u=True), "torch", 1e-9,
                                 chunk_size=16, cu_seqlens=cu)
