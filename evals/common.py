"""What the evals share: the checkout's root (results and configs are read and written there) and a
description of the machine for result headers."""
from __future__ import annotations

import os
import platform

from recall_lm.training.cli import ROOT  # noqa: F401  (the checkout; defined once, beside train.py's command)


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_line() -> str:
    """``<CPU>, <n> cores, torch <version>``."""
    import torch

    return f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}"
