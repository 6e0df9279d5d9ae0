"""A short MQAR training run through train.py: the loss falls, accuracy is logged, checkpoints resume."""
from pathlib import Path

import pytest
import torch

import train


def tiny_run_args(root: Path, max_steps: int, extra=()):
    return [
        "fit", "--config", str(train.ROOT / "configs/quickstart.yaml"),
        f"--trainer.default_root_dir={root}",
        f"--trainer.max_steps={max_steps}", "--trainer.max_epochs=-1",
        "--trainer.val_check_interval=20", "--trainer.check_val_every_n_epoch=null",
        "--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false",
        "--model.model.d_model=32", "--data.init_args.batch_size=32",
        *extra,
    ]


def read_losses(root: Path):
    import csv
    rows = list(csv.DictReader(open(root / "csv" / "metrics.csv")))
    return [float(r["train/loss"]) for r in rows if r.get("train/loss")]


def test_loss_falls_and_accuracy_is_reported(tmp_path, capsys):
    cli = train.main(tiny_run_args(tmp_path, 100, ["--model.lr=0.01"]))
    losses = read_losses(tmp_path)
    assert len(losses) == 100
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    # From log(512) ≈ 6.24 (uniform) to below log(256) ≈ 5.55 (it has learnt that answers are values).
    assert first > 6.0 and last < 5.45, (first, last)
    metrics = cli.trainer.callback_metrics
    assert {"val/acc", "val/acc/L64_kv4", "val/acc/L64_kv8"} <= set(metrics)
    assert 0.0 <= float(metrics["val/acc"]) <= 1.0
    assert "final recall accuracy" in capsys.readouterr().out
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_checkpoint_loads_without_unpickling_code(tmp_path):
    train.main(tiny_run_args(tmp_path, 5))
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert ckpt["hyper_parameters"]["model"]["mixer"] == "attention"
    assert ckpt["global_step"] == 5
