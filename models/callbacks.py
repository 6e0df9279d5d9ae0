"""Lightning callbacks of the training loop."""
from __future__ import annotations

import lightning as L
from lightning.pytorch.utilities import rank_zero_only


class RecallReport(L.Callback):
    """At the end of fit, print the last validation's recall accuracy, overall and per slice."""

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule):
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/acc")}
        if not metrics:
            return
        width = max(len(k) for k in metrics)
        lines = [f"final recall accuracy after {trainer.global_step} steps (per example, averaged):"]
        for key in sorted(metrics, key=lambda k: (k != "val/acc", k)):
            lines.append(f"  {key:<{width}}  {metrics[key]:.4f}")
        print("\n".join(lines), flush=True)
