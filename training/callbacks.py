"""Lightning callbacks of the training loop."""
from __future__ import annotations

import time
from collections import deque

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only


class LastCheckpoint(ModelCheckpoint):
    """``<dirpath>/last.ckpt``, rewritten at every save point (validation or epoch end) and at the end of
    training, whatever a metric did. train.py adds it beside a ``ModelCheckpoint`` that monitors a
    metric, because Lightning ≥ 2.6 rewrites such a callback's last.ckpt only when the metric improved:
    ``--ckpt_path last`` would resume an older step."""

    def __init__(self, dirpath: str):
        super().__init__(dirpath=dirpath, filename="last", save_top_k=1, enable_version_counter=False)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._should_skip_saving_checkpoint(trainer):  # e.g. max_steps reached between save points
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))


class RecallReport(L.Callback):
    """At the end of fit, print the last validation's recall accuracy, overall and per slice, and the
    step it was measured at when training went on after it."""

    def __init__(self):
        self.validated_at: int | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule):
        if not trainer.sanity_checking:
            self.validated_at = trainer.global_step

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule):
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/acc")}
        if not metrics or self.validated_at is None:
            return
        width = max(len(k) for k in metrics)
        steps = trainer.global_step
        lines = [
            f"final recall accuracy after {steps} steps (per example, averaged):"
            if self.validated_at == steps
            else f"recall accuracy of the last validation, at step {self.validated_at} of {steps} "
            "(per example, averaged):"
        ]
        for key in sorted(metrics, key=lambda k: (k != "val/acc", k)):
            lines.append(f"  {key:<{width}}  {metrics[key]:.4f}")
        print("\n".join(lines), flush=True)


class Throughput(L.Callback):
    """Logs ``perf/tokens_per_s`` (all ranks together) and ``perf/mfu`` every training step.

    Both are measured over the last ``window`` steps (wall time between the ends of consecutive
    training batches: data loading, forward, backward and optimiser step). MFU = achieved model
    FLOP/s per device / ``peak_flops`` with the model FLOPs from ``DecoderLM.flops_per_token``
    (analytic, training = 3 × forward; see models/flops.py). ``peak_flops`` (FLOP/s per device)
    defaults to the bf16 dense peak of a known GPU (recall_lm.models.flops.PEAK_FLOPS_BF16, e.g. H100/H200
    989e12, A100 312e12); on CPU or an unknown GPU MFU is not logged unless ``peak_flops`` is given.
    """

    def __init__(self, peak_flops: float | None = None, window: int = 10):
        if window < 1:
            raise ValueError(f"Throughput: window must be ≥ 1, got {window}")
        if peak_flops is not None and peak_flops <= 0:
            raise ValueError(f"Throughput: peak_flops must be > 0, got {peak_flops}")
        self.peak_flops, self.window = peak_flops, window
        self._times: deque[float] = deque(maxlen=window + 1)
        self._tokens: deque[int] = deque(maxlen=window)
        self._flops_cache: dict[int, float] = {}

    def on_train_start(self, trainer, pl_module):
        if self.peak_flops is None and pl_module.device.type == "cuda":
            from recall_lm.models.flops import peak_flops_for

            self.peak_flops = peak_flops_for(torch.cuda.get_device_name(pl_module.device))
        self._times.clear()
        self._tokens.clear()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if not self._times:
            self._sync(pl_module)
            self._times.append(time.perf_counter())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        input_ids = batch[0]
        self._sync(pl_module)
        self._times.append(time.perf_counter())
        self._tokens.append(input_ids.numel() * trainer.world_size)
        elapsed = self._times[-1] - self._times[0]
        if elapsed <= 0:
            return
        tokens_per_s = sum(self._tokens) / elapsed
        pl_module.log("perf/tokens_per_s", tokens_per_s, on_step=True, on_epoch=False)
        if self.peak_flops:
            seq_len = input_ids.shape[-1]
            if seq_len not in self._flops_cache:
                self._flops_cache[seq_len] = pl_module.model.flops_per_token(seq_len, training=True)
            achieved = tokens_per_s * self._flops_cache[seq_len] / trainer.world_size
            pl_module.log("perf/mfu", achieved / self.peak_flops, on_step=True, on_epoch=False)

    @staticmethod
    def _sync(pl_module):
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
