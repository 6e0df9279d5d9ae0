"""The training command behind ``train.py``: LightningCLI with the project's run folders, loggers,
checkpoint IO and one-line errors. ``main(args)`` is what ``python train.py ...`` runs; sweeps and tests
call it in-process.

Resuming (``--ckpt_path last``) is exact: checkpoints are written atomically
(recall_lm.training.checkpoint_io), the training order continues mid-epoch (recall_lm.data.resumable),
metrics.csv is continued rather than overwritten (recall_lm.training.csv_logger), and a W&B run keeps its id
(``<run dir>/wandb_run_id``).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the checkout: configs/ and runs/ are read and written here
QUICKSTART = ROOT / "configs" / "quickstart.yaml"


def use_wandb_offline_unless_logged_in():
    """W&B logs online only for a logged-in user; otherwise offline (never hang without network)."""
    if "WANDB_MODE" in os.environ or os.environ.get("WANDB_API_KEY"):
        return
    netrc = Path.home() / ".netrc"
    logged_in = netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")
    if not logged_in:
        os.environ["WANDB_MODE"] = "offline"


def default_run_dir(config_paths) -> str:
    """runs/<config path without .yaml>, e.g. runs/mqar/attention for configs/mqar/attention.yaml: the
    last ``--config`` that is not a fragment (a file named ``_*.yaml``, e.g. configs/strategies/_ddp.yaml),
    so that one model trained under two strategies does not share a folder with another model."""
    if not config_paths:
        return "runs/default"
    paths = [Path(str(p)) for p in config_paths]
    path = ([p for p in paths if not p.name.startswith("_")] or paths)[-1].resolve()
    try:
        path = path.relative_to(ROOT / "configs")
    except ValueError:
        path = Path(path.name)
    return str(Path("runs") / path.with_suffix(""))


def stable_wandb_id(root: str, resuming: bool) -> str:
    """The W&B run id of the run in ``root``: reused when resuming, new (and remembered) otherwise."""
    path = Path(root) / "wandb_run_id"
    if resuming and path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    import uuid

    run_id = uuid.uuid4().hex[:8]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id + "\n")
    return run_id


USER_ERRORS = (ValueError, FileNotFoundError, TypeError)  # what a bad setting raises while being built


def first_line(error: BaseException) -> str:
    """The first line of the innermost ValueError / FileNotFoundError / TypeError behind ``error``
    (jsonargparse wraps the error a class raised while being built in one of its own)."""
    while isinstance(inner := error.__cause__ or (None if error.__suppress_context__ else error.__context__),
                     USER_ERRORS):
        error = inner
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def raised_at(error: BaseException) -> str:
    """``file:line`` where ``error`` was raised, relative to the repository when inside it."""
    import traceback

    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return "?"
    path = Path(frames[-1].filename)
    return f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{frames[-1].lineno}"


def check_checkpoint(ckpt_path: str | None) -> dict | None:
    """Raise a ValueError unless ``ckpt_path`` is None, one of Lightning's names, or a train.py checkpoint;
    return the checkpoint's hyper-parameters when it read the file."""
    if ckpt_path is None or ckpt_path in ("last", "best", "hpc", "registry"):
        return None
    path = Path(ckpt_path)
    if path.is_dir():  # FSDP's sharded checkpoints are folders, with the non-tensor part in meta.pt
        if not (path / "meta.pt").is_file():
            raise ValueError(f"--ckpt_path {ckpt_path} is a folder but not a sharded checkpoint (no meta.pt)")
        return None
    if not path.is_file():
        raise ValueError(f"--ckpt_path {ckpt_path}: no such file (use a .ckpt a run wrote, or 'last')")
    from recall_lm.models.checkpoint import read_checkpoint

    try:  # memory-mapped and weights-only: cheap, and never runs code from the file
        checkpoint = read_checkpoint(path, mmap=True)
    except ValueError as error:
        raise ValueError(f"--ckpt_path {error}") from None
    from recall_lm.training.config_checks import check_tree

    for key in ("hyper_parameters", "datamodule_hyper_parameters"):
        check_tree(checkpoint.get(key), f"--ckpt_path {ckpt_path} ({key})")
    return checkpoint.get("hyper_parameters") or {}


def main(args: list[str] | None = None, run: bool = True):
    """Parse ``args`` (default: the command line) and run the subcommand; ``run=False`` only builds
    the model, data and trainer from ``--config`` (no subcommand), for tests and tools."""
    args = sys.argv[1:] if args is None else args
    if run and not args:
        args = ["fit", "--config", str(QUICKSTART)]
    use_wandb_offline_unless_logged_in()
    from recall_lm.kernels.cpu_memory import retain_freed_memory
    from recall_lm.training.config_checks import check_args

    try:
        check_args(args)
        retain_freed_memory()  # CPU: reuse freed large tensors instead of page-faulting fresh ones every step
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None

    import warnings

    from lightning import LightningDataModule

    import recall_lm.data.mqar_datamodule  # noqa: F401  (registers the MQAR DataModule for class_path lookup)
    from recall_lm.training.lightning_cli import RecallLMCLI
    from recall_lm.training.task import LanguageModelTask

    # Lightning's own pytree helper trips over torch's deprecation of LeafSpec on every fit: noise for users.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # check_run_folder refuses a fresh run into a folder with checkpoints: a full one means a resume
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    warnings.filterwarnings("ignore", message=r'.*ckpt_path="last"\) is set, but there is no last checkpoint')
    with warnings.catch_warnings():  # args may come from a caller (tests, sweeps) while sys.argv holds theirs
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        return RecallLMCLI(
            LanguageModelTask,
            LightningDataModule,
            subclass_mode_data=True,
            args=args,
            save_config_kwargs={"overwrite": True},
            run=run,
        )
