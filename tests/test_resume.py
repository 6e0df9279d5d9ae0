"""Exact resume: a training run SIGKILLed mid-epoch and restarted with ``--ckpt_path last`` continues
at the right step, with the same batches, the same losses and the same metrics.csv as a run that was
never interrupted; checkpoints are written atomically."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from recall_lm.training import cli as train_cli
from recall_lm.training.checkpoint_io import AtomicCheckpointIO

CONFIG = """
seed_everything: 0
model:
  architecture: {vocab_size: 64, d_model: 16, n_layers: 2, mixer: attention, mlp: none,
          mixer_kwargs: {attention: {num_heads: 1}}}
  lr: 3.0e-3
  warmup_steps: 4
data:
  class_path: recall_lm.data.mqar_datamodule.MQARDataModule
  init_args:
    vocab_size: 64
    batch_size: 8
    train_slices: [{input_seq_len: 16, num_kv_pairs: 2, num_examples: 80}]
    test_slices: [{input_seq_len: 16, num_kv_pairs: 2, num_examples: 16}]
trainer:
  max_steps: 24          # 10 batches an epoch: the kill (step 14) and the resume are mid-epoch
  max_epochs: -1
  accelerator: cpu
  devices: 1
  precision: 32-true
  gradient_clip_val: 1.0
  log_every_n_steps: 1
  val_check_interval: 5
  check_val_every_n_epoch: null
  num_sanity_val_steps: 0
  enable_progress_bar: false
  enable_model_summary: false
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {every_n_train_steps: 4, save_last: true, save_top_k: 1}
    - class_path: tests.test_resume.BatchFingerprint
"""


class BatchFingerprint(L.Callback):
    """Logs ``debug/batch`` = a position-weighted checksum of the batch's input ids (< 2²⁴, exact in fp32)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        ids = batch[0].long().flatten()
        weights = torch.arange(1, ids.numel() + 1)
        pl_module.log("debug/batch", float(int((ids * weights).sum()) % 16_777_213))


class KillAt(L.Callback):
    """SIGKILLs its own process at the end of training step ``step`` (no clean-up of any kind)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def run_train(args: list[str], check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(train_cli.ROOT / "train.py"), *args],
        cwd=train_cli.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"train.py {args} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return done


def train_rows(root: Path) -> dict[int, dict[str, float]]:
    """step -> {train/loss, debug/batch} from metrics.csv (one row per step; fails on duplicates)."""
    out: dict[int, dict[str, float]] = {}
    for row in csv.DictReader(open(root / "csv" / "metrics.csv")):
        if row.get("train/loss"):
            step = int(row["step"])
            assert step not in out, f"step {step} logged twice in {root}/csv/metrics.csv"
            out[step] = {"loss": float(row["train/loss"]), "batch": float(row["debug/batch"])}
    return out


def val_steps(root: Path) -> list[int]:
    return [int(r["step"]) for r in csv.DictReader(open(root / "csv" / "metrics.csv")) if r.get("val/acc")]


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(CONFIG)
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    run_train(["fit", "--config", str(config), f"--trainer.default_root_dir={reference}"])

    killed = run_train(
        [
            "fit",
            "--config",
            str(config),
            f"--trainer.default_root_dir={resumed}",
            "--trainer.callbacks+=tests.test_resume.KillAt",
            "--trainer.callbacks.step=14",
        ],
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    last = resumed / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True, map_location="cpu")
    assert state["global_step"] == 12  # checkpoints every 4 steps; killed after step 14
    assert not [p for p in last.parent.iterdir() if p.name.endswith(".tmp")]

    run_train(
        ["fit", "--config", str(config), f"--trainer.default_root_dir={resumed}", "--ckpt_path", "last"]
    )
    final = torch.load(last, weights_only=True, map_location="cpu")
    assert final["global_step"] == 24

    expected, got = train_rows(reference), train_rows(resumed)
    assert sorted(expected) == list(range(24))
    assert sorted(got) == sorted(expected)  # one row per step: nothing lost, nothing repeated
    # the same batches in the same order after the resume (12 = mid-epoch 2, 20 = an epoch boundary)
    assert [got[s]["batch"] for s in range(24)] == [expected[s]["batch"] for s in range(24)]
    assert len({expected[s]["batch"] for s in range(10)}) == 10  # the fingerprint tells batches apart
    for s in range(24):
        assert got[s]["loss"] == pytest.approx(expected[s]["loss"], rel=1e-5, abs=1e-6), s
    assert val_steps(resumed) == val_steps(reference) == [4, 9, 14, 19]  # after batches 5, 10, 15, 20


def test_failed_save_keeps_previous_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 1, "w": torch.ones(3)}, path)

    class Explodes:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(1000), "bad": Explodes()}, path)
    kept = torch.load(path, weights_only=True)
    assert kept["global_step"] == 1 and torch.equal(kept["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # the temporary file is gone


def test_train_py_installs_atomic_checkpoint_io_and_resumable_logs(tmp_path):
    cli = train_cli.main(["--config", str(train_cli.ROOT / "configs/quickstart.yaml"),
                      f"--trainer.default_root_dir={tmp_path}"], run=False)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    from recall_lm.training.csv_logger import CSVResume, ResumableCSVLogger

    assert isinstance(cli.trainer.loggers[0], ResumableCSVLogger)
    assert any(isinstance(c, CSVResume) for c in cli.trainer.callbacks)


def test_wandb_id_is_stable_across_resume(tmp_path):
    first = train_cli.stable_wandb_id(str(tmp_path), resuming=False)
    assert train_cli.stable_wandb_id(str(tmp_path), resuming=True) == first
    assert train_cli.stable_wandb_id(str(tmp_path), resuming=False) != first  # a fresh run is a new W&B run
