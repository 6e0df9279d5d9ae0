"""LanguageModelTask: the one LightningModule — owns a DecoderLM, its loss, optimiser and metrics.

It sees batches of ``(input_ids, labels)`` with labels already aligned to the next token (-100 is
ignored), so it serves MQAR and text alike.
"""
from __future__ import annotations

import math
from dataclasses import asdict

import lightning as L
import torch
import torch.nn.functional as F

from recall_lm.layers.documents import Documents
from recall_lm.models.config import IGNORE_INDEX, ModelConfig
from recall_lm.models.decoder import DecoderLM


class NonFiniteError(ValueError):
    """A NaN or infinite loss or gradient (train.py ends the run with its one line)."""


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """LR multiplier: linear warm-up from 0 to 1 over ``warmup_steps``, then cosine down to ``min_lr_ratio``.

    With ``warmup_steps=0`` and ``min_lr_ratio=0`` this is torch's ``CosineAnnealingLR(T_max=total_steps,
    eta_min=0)``: 0.5·(1 + cos(π·step/total_steps)).
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def per_example_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """labels [B, T] -> [B]: fraction of labelled positions (labels ≠ -100) predicted right per example.

    ``logits`` is [B, T, V], or [N, V] at the N labelled positions only (row-major order of the mask,
    as ``DecoderLM.forward(..., logits_at=labels != -100)`` returns them).
    """
    mask = labels != IGNORE_INDEX
    counts = mask.sum(-1).clamp(min=1).float()
    if logits.dim() == labels.dim() + 1:
        correct = (logits.argmax(-1) == labels) & mask
        return correct.sum(-1).float() / counts
    correct = (logits.argmax(-1) == labels[mask]).float()
    rows = mask.nonzero()[:, 0]
    return torch.zeros(labels.shape[0], device=labels.device).index_add_(0, rows, correct) / counts


def clip_grad_norm(module: torch.nn.Module, max_norm: float) -> torch.Tensor:
    """Scale all gradients so that their global L2 norm is at most ``max_norm``; returns the norm.

    Works for plain and FSDP2-sharded (DTensor) parameters: the norm is reduced over the shards.
    """
    grads = [p for p in module.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(grads, max_norm)
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


class LanguageModelTask(L.LightningModule):
    """Next-token training of a DecoderLM with AdamW, warm-up + cosine LR, and recall accuracy.

    Args:
        architecture: the ModelConfig of the DecoderLM (``model.architecture`` in configs; it was
            ``model.model`` before, which train.py refuses with the new name).
        lr, weight_decay, betas: AdamW.
        weight_decay_on: "matrices" (default: matrices and embeddings, not norms or biases) or "all"
            (every parameter, as Zoology's ``AdamW(model.parameters())``); either way not those a mixer
            exempts (``no_weight_decay``: decays, biases, RWKV's mixing vectors and LoRAs).
        warmup_steps: linear warm-up steps (an int, or a fraction of all steps when < 1); epochs when
            ``lr_interval="epoch"``.
        min_lr_ratio: the cosine ends at lr · min_lr_ratio.
        lr_interval: "step" (default: the schedule advances every optimiser step over the whole run) or
            "epoch" (it advances once per epoch over ``trainer.max_epochs``: with warmup 0 and
            min_lr_ratio 0, Zoology's ``CosineAnnealingLR(T_max=max_epochs)``).
        chunked_loss_rows: for batches labelled at every position (text), > 0 computes the head and the
            loss that many rows at a time without the [B, T, vocab] logits
            (recall_lm.models.linear_cross_entropy; the same loss and gradients, a fraction of the memory
            at large vocabularies); 0: off.
        aux_loss_weight: multiplies the mixers' auxiliary losses (e.g. MoM load balancing).
        compile: ``torch.compile`` each Block in place (``Block.compile()``: state_dict keys unchanged).
        compile_backend: the torch.compile backend ("inductor"; "aot_eager" compiles fast, for tests).
        allow_nonfinite: False (default) stops training at the first step whose loss, or whose gradient
            norm, is NaN or infinite, with an error naming the step, the value and the learning rate (every
            rank stops together; gradients are not checked when a gradient scaler skips such steps itself,
            as with 16-mixed). True trains on.

    Gradient clipping (``trainer.gradient_clip_val``) also works under FSDP: see
    ``configure_gradient_clipping``.

    The LM head and the loss are computed only at labelled positions (labels ≠ -100): the same loss
    and accuracy, but an MQAR step skips the vocabulary-wide head at the positions it ignores. Text,
    where every position is labelled, computes all of them.
    """

    LR_INTERVALS = ("step", "epoch")
    WEIGHT_DECAY_ON = ("matrices", "all")

    def __init__(
        self,
        architecture: ModelConfig,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_steps: float = 0.1,
        min_lr_ratio: float = 0.1,
        aux_loss_weight: float = 1.0,
        compile: bool = False,
        compile_backend: str = "inductor",
        lr_interval: str = "step",
        weight_decay_on: str = "matrices",
        chunked_loss_rows: int = 0,
        allow_nonfinite: bool = False,
    ):
        super().__init__()
        if lr_interval not in self.LR_INTERVALS:
            raise ValueError(
                f"LanguageModelTask.lr_interval must be one of {self.LR_INTERVALS}, got {lr_interval!r}"
            )
        if weight_decay_on not in self.WEIGHT_DECAY_ON:
            raise ValueError(f"LanguageModelTask.weight_decay_on must be one of {self.WEIGHT_DECAY_ON}, "
                             f"got {weight_decay_on!r}")
        if chunked_loss_rows < 0:
            raise ValueError(
                f"LanguageModelTask.chunked_loss_rows must be ≥ 0 (0: off), got {chunked_loss_rows}"
            )
        if not lr >= 0 or not weight_decay >= 0:
            raise ValueError(f"LanguageModelTask needs lr ≥ 0 and weight_decay ≥ 0, got {lr}, {weight_decay}")
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"LanguageModelTask.betas must be two numbers in [0, 1), got {list(betas)}")
        if compile:
            import torch._dynamo

            if compile_backend not in torch._dynamo.list_backends(exclude_tags=()):
                raise ValueError(
                    f"LanguageModelTask.compile_backend {compile_backend!r} is not a torch.compile "
                    f"backend; known: {', '.join(torch._dynamo.list_backends())}"
                )
        if warmup_steps < 0 or not 0 <= min_lr_ratio <= 1:
            raise ValueError(f"LanguageModelTask needs warmup_steps ≥ 0 and 0 ≤ min_lr_ratio ≤ 1, "
                             f"got {warmup_steps}, {min_lr_ratio}")
        if isinstance(architecture, dict):
            architecture = ModelConfig(**architecture)
        # Plain types only in the checkpoint, so it loads with torch.load(weights_only=True).
        self.save_hyperparameters(
            {
                "architecture": asdict(architecture),
                "lr": lr,
                "weight_decay": weight_decay,
                "betas": list(betas),
                "warmup_steps": warmup_steps,
                "min_lr_ratio": min_lr_ratio,
                "aux_loss_weight": aux_loss_weight,
                "compile": bool(compile),
                "compile_backend": compile_backend,
                "lr_interval": lr_interval,
                "weight_decay_on": weight_decay_on,
                "chunked_loss_rows": chunked_loss_rows,
                "allow_nonfinite": bool(allow_nonfinite),
            }
        )
        self.config = architecture
        self.model = DecoderLM(architecture)
        if compile:
            for block in self.model.blocks:
                block.compile(backend=compile_backend)
        self._val_sums: dict[int, torch.Tensor] = {}

    def forward(self, input_ids: torch.Tensor):
        return self.model(input_ids)

    def check_data(self, datamodule) -> None:
        """Raise a ValueError naming the setting when the data's vocabulary does not fit the model's.

        Called by train.py before training (a one-line error) and again in ``setup``. The data's
        vocabulary is its ``vocab_size`` (MQAR and the probes) or its tokenizer's (text).
        """
        tokenizer = getattr(datamodule, "tokenizer", None)
        data_vocab = getattr(tokenizer, "vocab_size", None) or getattr(datamodule, "vocab_size", None)
        model_vocab = self.config.vocab_size
        if data_vocab is not None and int(data_vocab) > model_vocab:
            source = "its tokenizer's vocabulary" if tokenizer is not None else "data.init_args.vocab_size"
            raise ValueError(
                f"the data's vocabulary ({source}: {data_vocab}) is larger than the model's "
                f"model.architecture.vocab_size={model_vocab}: token ids ≥ {model_vocab} have no "
                f"embedding; set model.architecture.vocab_size ≥ {data_vocab}"
            )

    def check_monitors(self, callbacks, datamodule) -> None:
        """Raise a ValueError when a callback monitors a ``train/`` or ``val/`` metric this task never logs
        (a typo would otherwise stop the run at its first validation, without a checkpoint)."""
        names = getattr(datamodule, "val_slice_names", None) or []
        logged = {"train/loss", "train/aux_loss", "train/lr", "val/acc", "val/loss"}
        logged |= {f"val/{kind}/{name}" for kind in ("acc", "loss") for name in names}
        for callback in callbacks:
            monitor = getattr(callback, "monitor", None)
            if isinstance(monitor, str) and monitor.startswith(("train/", "val/")) and monitor not in logged:
                raise ValueError(
                    f"{type(callback).__name__}(monitor={monitor!r}): this run logs no such metric; "
                    f"it logs {sorted(logged)}"
                )

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None:
            self.check_data(datamodule)

    def _loss(self, batch):
        """batch: (input_ids [B, T], labels [B, T]) or, document-masked, (..., starts [B, T] bool): then
        the B blocks run as one packed row of documents (``cu_seqlens``), logits returned as [B, T, V]."""
        input_ids, labels = batch[0], batch[1]
        extra = {}
        if len(batch) == 3:
            extra["cu_seqlens"] = Documents.from_starts(batch[2]).cu_seqlens
            shape, input_ids, labels = labels.shape, input_ids.reshape(1, -1), labels.reshape(1, -1)
        loss, out = self._loss_on(input_ids, labels, **extra)
        if len(batch) == 3:
            if out.logits is not None and out.logits.dim() == 3:
                out.logits = out.logits.view(*shape, -1)
            if out.correct is not None:
                out.correct = out.correct.view(shape)
        return loss, out

    def _loss_on(self, input_ids, labels, **extra):
        """One of three ways to the loss, by where the labels are: text labels nearly every position
        (``_dense_loss``, or ``_chunked_dense_loss`` with ``chunked_loss_rows``), MQAR only a few
        (``_sparse_loss``)."""
        labelled = labels != IGNORE_INDEX
        if labelled.float().mean() < 0.5:
            return self._sparse_loss(input_ids, labels, labelled, **extra)
        if self.hparams.get("chunked_loss_rows", 0):
            return self._chunked_dense_loss(input_ids, labels, **extra)
        return self._dense_loss(input_ids, labels, **extra)

    def _sparse_loss(self, input_ids, labels, labelled, **extra):
        """The head at the labelled positions only: logits [N, V]."""
        out = self.model(input_ids, logits_at=labelled, **extra)
        return F.cross_entropy(out.logits.float(), labels[labelled]), out

    def _dense_loss(self, input_ids, labels, **extra):
        """The head at every position (indexing the labelled rows would cost more than the few ignored)."""
        out = self.model(input_ids, **extra)
        loss = F.cross_entropy(out.logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX)
        return loss, out

    def _chunked_dense_loss(self, input_ids, labels, **extra):
        """The head and the loss ``chunked_loss_rows`` rows at a time, without the [B, T, V] logits."""
        out = self.model(input_ids, labels=labels, loss_chunk_rows=self.hparams.chunked_loss_rows, **extra)
        return out.loss, out

    def training_step(self, batch, batch_idx):
        loss, out = self._loss(batch)
        total = loss + self.hparams.aux_loss_weight * out.aux_loss
        # averaged over ranks, so a data-parallel run logs the loss of its whole global batch
        self.log("train/loss", loss, prog_bar=True, sync_dist=self._distributed())
        if out.aux_loss.requires_grad:
            self.log("train/aux_loss", out.aux_loss)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"])
        self._stop_if_nonfinite(total.detach(), "train/loss")
        return total

    def on_before_optimizer_step(self, optimizer) -> None:
        if getattr(self.trainer.precision_plugin, "scaler", None) is not None:
            return  # the scaler skips steps with non-finite gradients and lowers its scale
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        grads = [g.to_local() if hasattr(g, "to_local") else g for g in grads]  # FSDP2: this rank's shard
        if grads:
            norm = torch.stack(torch._foreach_norm(grads)).float().norm()
            self._stop_if_nonfinite(norm, "the gradient norm")

    def _stop_if_nonfinite(self, value: torch.Tensor, what: str) -> None:
        """Raise NonFiniteError when ``value`` is NaN or infinite on any rank (unless allow_nonfinite)."""
        if self.hparams.get("allow_nonfinite", False):
            return
        mine = (~torch.isfinite(value)).float()
        anywhere = (
            self.trainer.strategy.reduce(mine.clone(), reduce_op="sum") if self._distributed() else mine
        )  # in place
        if anywhere.item() > 0:  # every rank learns whether any rank diverged, so all of them stop here
            lr = self.optimizers().param_groups[0]["lr"]
            state = (
                f"is {value.item()}"
                if mine.item()
                else f"is non-finite on another rank ({value.item():.4g} here)"
            )
            raise NonFiniteError(
                f"training stopped at step {self.global_step}: {what} {state} at lr {lr:.3g}; "
                f"lower model.lr, or set model.allow_nonfinite=true to train on"
            )

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        loss, out = self._loss(batch)
        if out.logits is None:  # the chunked loss: its own per-position correctness
            acc = out.correct.sum(-1).float() / (batch[1] != IGNORE_INDEX).sum(-1).clamp(min=1).float()
        else:
            acc = per_example_accuracy(out.logits, batch[1])
        sums = self._val_sums.setdefault(
            dataloader_idx, torch.zeros(3, device=self.device, dtype=torch.float64)
        )
        sums += torch.stack(
            [
                acc.sum().double(),
                torch.tensor(float(acc.numel()), device=self.device).double(),
                loss.detach().double() * acc.numel(),
            ]
        )

    def val_slice_names(self) -> list[str]:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        names = getattr(datamodule, "val_slice_names", None)
        return list(names) if names else [f"set{i}" for i in range(max(self._val_sums, default=-1) + 1)]

    def on_validation_epoch_end(self):
        names = self.val_slice_names()
        sums = torch.stack([self._val_sums.get(i, torch.zeros(3, device=self.device, dtype=torch.float64))
                            for i in range(len(names))])
        sums = self.trainer.strategy.reduce(sums, reduce_op="sum") if self.trainer.world_size > 1 else sums
        self._val_sums = {}
        for name, (correct, count, loss) in zip(names, sums.tolist()):
            if count:
                self.log(f"val/acc/{name}", correct / count, add_dataloader_idx=False, sync_dist=False)
                self.log(f"val/loss/{name}", loss / count, add_dataloader_idx=False, sync_dist=False)
        total = sums.sum(0)
        if total[1] > 0:
            self.log("val/acc", (total[0] / total[1]).item(), prog_bar=True, add_dataloader_idx=False)
            self.log("val/loss", (total[2] / total[1]).item(), add_dataloader_idx=False)

    def _distributed(self) -> bool:
        return self._trainer is not None and self.trainer.world_size > 1

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """Norm clipping that is also correct for sharded parameters.

        Lightning's FSDP precision plugin refuses ``gradient_clip_algorithm="norm"`` (a plain
        ``clip_grad_norm_`` over local shards would see only this rank's part of the norm). Under FSDP
        the total norm comes from the root FSDP module's ``clip_grad_norm_`` (FSDP1), or from
        ``torch.nn.utils.clip_grad_norm_`` over DTensor gradients (FSDP2 ``fully_shard``), which
        reduces over the shards; everything else takes Lightning's own path.
        """
        if not gradient_clip_val:
            return
        algorithm = str(gradient_clip_algorithm or "norm")
        if algorithm == "norm":
            from lightning.pytorch.strategies import FSDPStrategy

            strategy = self.trainer.strategy
            if isinstance(strategy, FSDPStrategy):
                strategy.model.clip_grad_norm_(gradient_clip_val)
                return
            if any(type(p).__name__ == "DTensor" for p in self.parameters()):
                clip_grad_norm(self, gradient_clip_val)
                return
        self.clip_gradients(optimizer, gradient_clip_val=gradient_clip_val, gradient_clip_algorithm=algorithm)

    def build_optimizer(self) -> torch.optim.AdamW:
        """AdamW with weight decay on the parameters that ``weight_decay_on`` names (the rest at 0), never
        on those a module lists in its ``no_weight_decay`` (e.g. Gated DeltaNet's A_log and dt_bias), and
        a module's ``lr_scale`` ({parameter name: multiplier}, e.g. RWKV-7's w0 at 2×) as extra groups at
        lr · multiplier (the schedule scales every group alike). Groups: decayed, not decayed, then one per
        (decayed, multiplier) pair that occurs."""
        hp = self.hparams
        modules = list(self.model.modules())
        exempt = {id(getattr(m, name)) for m in modules for name in getattr(m, "no_weight_decay", ())}
        scales = {id(getattr(m, name)): float(scale) for m in modules
                  for name, scale in getattr(m, "lr_scale", {}).items()}
        groups: dict[tuple[bool, float], list] = {(True, 1.0): [], (False, 1.0): []}
        for p in self.model.parameters():
            if p.requires_grad:
                decayed = (p.ndim >= 2 or hp.get("weight_decay_on") == "all") and id(p) not in exempt
                groups.setdefault((decayed, scales.get(id(p), 1.0)), []).append(p)
        return torch.optim.AdamW(
            [{"params": params, "weight_decay": hp.weight_decay if decayed else 0.0, "lr": hp.lr * scale}
             for (decayed, scale), params in groups.items()],
            lr=hp.lr, betas=tuple(hp.betas),
        )

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = self.build_optimizer()
        interval = hp.get("lr_interval", "step")
        if interval == "epoch":
            total = self.trainer.max_epochs
            if total is None or total < 1:
                raise ValueError("LanguageModelTask.lr_interval='epoch' needs trainer.max_epochs ≥ 1, "
                                 f"got {total}")
        else:
            total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(hp.warmup_steps * total) if hp.warmup_steps < 1 else int(hp.warmup_steps)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, warmup, total, hp.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": interval}}
