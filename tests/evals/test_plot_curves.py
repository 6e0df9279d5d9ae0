"""recall_lm.evals.tools.plot_curves: reads a run's metrics.csv and writes a PNG; missing columns are
named."""

import pytest

from recall_lm.evals.tools.plot_curves import plot_curves, read_metric_series


def _run(tmp_path):
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "metrics.csv").write_text(
        "epoch,step,train/loss,val/loss\n0,9,4.0,\n0,19,3.0,\n0,19,,2.5\n0,29,2.0,\n")
    return tmp_path


def test_series_keep_only_logged_steps(tmp_path):
    series = read_metric_series(_run(tmp_path) / "csv" / "metrics.csv", ["train/loss", "val/loss"])
    assert series == {"train/loss": [(9, 4.0), (19, 3.0), (29, 2.0)], "val/loss": [(19, 2.5)]}


def test_png_written_and_bad_inputs_named(tmp_path):
    out = plot_curves(_run(tmp_path), tmp_path / "curve.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="val/acc"):
        plot_curves(tmp_path, tmp_path / "x.png", metrics=["val/acc"])
    with pytest.raises(FileNotFoundError, match="metrics.csv"):
        plot_curves(tmp_path / "nope", tmp_path / "x.png")


def test_cli_names_a_missing_run_in_one_line(tmp_path):
    from recall_lm.evals.tools.plot_curves import main

    with pytest.raises(SystemExit, match="^error: no metrics file at"):
        main([str(tmp_path / "nope"), "--out", str(tmp_path / "x.png")])
