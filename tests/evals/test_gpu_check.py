"""make gpu-check refuses to run without a CUDA device, with one line, and parses pytest's summary."""
import pytest
import torch

from recall_lm.evals.bench import gpu_check


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_needs_a_cuda_device(capsys):
    assert gpu_check.main([]) == 2
    assert "needs a CUDA device" in capsys.readouterr().err


def test_summary_keeps_failures_and_the_closing_line():
    out = (
        "....F\nFAILED tests/kernels/test_x.py::test_y - AssertionError\nnoise\n"
        "3 failed, 97 passed in 12.0s\n"
    )
    assert gpu_check.test_summary(out) == ["FAILED tests/kernels/test_x.py::test_y - AssertionError",
                                           "3 failed, 97 passed in 12.0s"]
