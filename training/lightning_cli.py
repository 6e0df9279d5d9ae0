"""The LightningCLI behind ``train.py``: the project's run folders, loggers (a resumable CSV log, a W&B
run id that survives a resume), atomic checkpoint IO, ``last.ckpt`` where ``--ckpt_path last`` finds it,
and bad settings ending in one line ``error: ...`` before any training. ``recall_lm.training.cli.main``
builds it."""
from __future__ import annotations

import os

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger

from recall_lm.training.callbacks import LastCheckpoint
from recall_lm.training.checkpoint_io import AtomicCheckpointIO
from recall_lm.training.cli import (
    USER_ERRORS,
    check_checkpoint,
    default_run_dir,
    first_line,
    raised_at,
    stable_wandb_id,
)
from recall_lm.training.csv_logger import CSVResume, ResumableCSVLogger
from recall_lm.training.resume_checks import check_run_folder


class RecallLMCLI(LightningCLI):
    """Bad settings found while building the model, data and trainer, or just before fitting
    (vocabulary mismatch, a file that is not a checkpoint), end the run with one line
    ``error: ...`` naming the setting, before any training.

    Private Lightning and W&B API this class relies on (tests/test_cli_errors.py::
    test_the_private_lightning_and_wandb_api_used_here_still_exists fails if one goes away):
    ``LightningCLI._parse_ckpt_path``, ``LightningCLI._run_subcommand``, ``LightningCLI._get``;
    ``WandbLogger._experiment``, ``WandbLogger._wandb_init``, ``WandbLogger._id``.
    """

    def _parse_ckpt_path(self):
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else None
        ckpt_path = config.get("ckpt_path") if config is not None else None
        try:
            hparams = check_checkpoint(ckpt_path)
            if subcommand == "fit":
                root = config.trainer.default_root_dir or default_run_dir(config.get("config"))
                check_run_folder(str(root), ckpt_path, config.model.as_dict())
        except ValueError as error:
            raise SystemExit(f"error: {first_line(error)}") from None
        if hparams is not None and "model" in hparams and "architecture" not in hparams:
            return  # written before model.model became model.architecture: Lightning cannot re-parse its
            # hyper-parameters, so the run's own config (checked against them above) is what resumes
        super()._parse_ckpt_path()

    def instantiate_classes(self):
        try:
            super().instantiate_classes()
        except (*USER_ERRORS, MisconfigurationException) as error:  # the latter: Trainer settings
            raise SystemExit(f"error: {first_line(error)}") from None

    def _run_subcommand(self, subcommand):
        """Settings that only fail once fitting starts (data files, tokenizers, MQAR slices, a kernel's
        chunk size) end with their message and where it was raised; RECALL_LM_TRACEBACK=1 keeps the
        traceback."""
        try:
            super()._run_subcommand(subcommand)
        except (ValueError, FileNotFoundError) as error:
            if os.environ.get("RECALL_LM_TRACEBACK"):
                raise
            raise SystemExit(f"error: {first_line(error)} (raised at {raised_at(error)}; "
                             "RECALL_LM_TRACEBACK=1 shows the traceback)") from None

    def before_fit(self):
        try:
            self.model.check_data(self.datamodule)
            self.model.check_monitors(self.trainer.callbacks, self.datamodule)
        except ValueError as error:
            raise SystemExit(f"error: {first_line(error)}") from None

    def before_instantiate_classes(self):
        config = self.config.get(str(self.subcommand), self.config) if self.subcommand else self.config
        if config.trainer.default_root_dir is None:
            config.trainer.default_root_dir = default_run_dir(config.get("config"))

    def instantiate_trainer(self, **kwargs):
        trainer_config = self._get(self.config_init, "trainer", default={})
        root = trainer_config.get("default_root_dir") or "runs"
        subcommand = self.config.get(str(self.subcommand)) if self.subcommand else None
        resuming = bool(subcommand is not None and subcommand.get("ckpt_path"))
        loggers = trainer_config.get("logger")
        if loggers is True or loggers is None:
            loggers = []
        elif isinstance(loggers, Logger):
            loggers = [loggers]
        extra_callbacks = []
        if loggers is not False:
            if not any(isinstance(lg, CSVLogger) for lg in loggers):
                csv_logger = ResumableCSVLogger(root, name="csv", version="")
                loggers = [csv_logger] + list(loggers)
                extra_callbacks.append(CSVResume(csv_logger))
            for lg in loggers:
                # WandbLogger without an id: a stable one, so `--ckpt_path last` continues the W&B run
                if (
                    isinstance(lg, WandbLogger)
                    and lg._experiment is None
                    and not lg._wandb_init.get("id")
                ):
                    lg._id = lg._wandb_init["id"] = stable_wandb_id(root, resuming)
        trainer = super().instantiate_trainer(logger=loggers, **kwargs)
        trainer.callbacks.extend(extra_callbacks)
        folder, monitored = os.path.join(root, "checkpoints"), False
        for checkpoint in trainer.checkpoint_callbacks:  # a fixed place, so `--ckpt_path last` finds it
            if checkpoint.dirpath is None:
                checkpoint.dirpath = folder
                # Lightning ≥ 2.6 writes a monitored callback's last.ckpt only when the metric improved
                checkpoint.save_last = checkpoint.monitor is None
                monitored |= checkpoint.monitor is not None
        if monitored and not any(c.monitor is None and c.save_last and c.dirpath == folder
                                 for c in trainer.checkpoint_callbacks):
            trainer.callbacks.append(LastCheckpoint(folder))  # what `--ckpt_path last` resumes
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # never a half-written last.ckpt
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer
