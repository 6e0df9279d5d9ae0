"""The SWA benchmark section runs and returns a well-formed markdown table (tiny shapes)."""
from recall_lm.evals.bench.swa import swa_section


def test_swa_section_smoke():
    rows = swa_section("cpu", seq_lens=(64,), windows=(8, 16), repeats=1)
    assert rows[0].startswith("| device |") and rows[1].startswith("|---")
    assert len(rows) == 2 + 3  # swa torch at two windows, sdpa once
    assert all(row.count("|") == rows[0].count("|") for row in rows)
    assert not any("nan" in row for row in rows)
