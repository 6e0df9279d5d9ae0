"""A CSV logger whose ``metrics.csv`` continues across ``--ckpt_path`` resumes.

Lightning's CSVLogger deletes an existing ``metrics.csv`` when it starts, so a resumed run loses the
history before the kill; and it flushes only every 100 steps, so a killed run loses the rows since
the last flush. Here:

* the rows are flushed whenever a checkpoint is written (``after_save_checkpoint``), so the file holds
  at least every row logged before the checkpoint;
* ``CSVResume`` (a callback) stores in the checkpoint how many rows had been logged when it was
  written; on resume the file is cut back to those rows plus the training rows of the checkpoint's
  own batch (Lightning logs them just after the checkpoint); the other rows logged after the
  checkpoint by the killed run are dropped (the resumed run logs them again), new rows are appended.

A fresh run (no checkpoint loaded) starts a new file, as Lightning's logger does.
"""
from __future__ import annotations

import csv
import os

import lightning as L
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only


class _ContinuingWriter(ExperimentWriter):
    """ExperimentWriter that keeps an existing metrics.csv and counts the rows logged into it."""

    def __init__(self, log_dir: str):
        self.rows_logged = 0
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:  # keep the file; CSVResume decides what stays
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                reader = csv.DictReader(f)
                self.metrics_keys = sorted(reader.fieldnames or [])
                self.rows_logged = sum(1 for _ in reader)

    def log_metrics(self, metrics_dict, step=None) -> None:
        super().log_metrics(metrics_dict, step)
        self.rows_logged += 1

    def keep_rows(self, n: int | None, step: int = 0) -> None:
        """Cut the file back to its first ``n`` rows plus later training rows of steps < ``step``
        (``None``: drop the file, a fresh run)."""
        self.metrics = []
        if not os.path.isfile(self.metrics_file_path):
            self.rows_logged = 0
            return
        if n is None:
            os.remove(self.metrics_file_path)
            self.metrics_keys, self.rows_logged = [], 0
            return
        with open(self.metrics_file_path, newline="") as f:
            reader = csv.DictReader(f)
            fields = list(reader.fieldnames or [])
            rows = list(reader)
        # The training metrics of the checkpoint's own batch are written after the checkpoint: keep them.
        rows = rows[:n] + [r for r in rows[n:] if int(r.get("step") or 0) < step
                           and any(r.get(k) for k in r if k.startswith("train/"))]
        with open(self.metrics_file_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        self.metrics_keys, self.rows_logged = sorted(fields), len(rows)


class ResumableCSVLogger(CSVLogger):
    """CSVLogger that flushes at every checkpoint and, with ``CSVResume``, continues its file on resume."""

    @property
    @rank_zero_experiment
    def experiment(self) -> _ContinuingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir)
        return self._experiment

    def after_save_checkpoint(self, checkpoint_callback) -> None:
        self.save()

    @rank_zero_only
    def rows_logged(self) -> int:
        return self.experiment.rows_logged

    @rank_zero_only
    def keep_rows(self, n: int | None, step: int = 0) -> None:
        self.experiment.keep_rows(n, step)


class CSVResume(L.Callback):
    """Records the CSV row count in each checkpoint and restores the file to it on resume (see module doc)."""

    def __init__(self, logger: ResumableCSVLogger):
        self.logger = logger
        self._loaded = False
        self._trainer = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict:
        rows = self.logger.rows_logged() if rank_zero_only.rank == 0 else 0
        step = self._trainer.global_step if self._trainer is not None else 0
        return {"csv_rows": rows, "global_step": int(step)}

    def load_state_dict(self, state_dict: dict) -> None:
        self._loaded = True
        self.logger.keep_rows(int(state_dict.get("csv_rows", 0)), int(state_dict.get("global_step", 0)))

    def on_fit_start(self, trainer, pl_module) -> None:
        if not self._loaded:  # a fresh run starts a fresh file
            self.logger.keep_rows(None)
