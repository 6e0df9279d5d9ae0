"""The mixer registry: every sequence-mixing layer is registered by name and built from (d_model, **kwargs).

The contract a mixer follows is written once, in recall_lm.layers.contract (``Mixer``); registering a
class that does not follow it fails with one line saying what is missing.

The modules that register mixers (and MLPs) are listed in ``MIXER_MODULES``; ``mixers()`` and
``build_mixer`` import them first, so the registry is complete whichever module a program imported
before. A new mixer file is added to that list (``tests/layers/test_registry.py`` fails until it is).
"""
from __future__ import annotations

import importlib
import inspect
from typing import Callable

from torch import nn

from recall_lm.layers.contract import missing_parts

MIXERS: dict[str, type[nn.Module]] = {}  # filled by @register_mixer; read it through mixers()

# Every module of recall_lm.layers that registers a mixer or an MLP.
MIXER_MODULES = (
    "attention",
    "base_conv",
    "based",
    "deltanet",
    "fox",
    "gated_deltanet",
    "gated_deltaproduct",
    "kda",
    "linear_attention",
    "loglinear_mamba2",
    "mamba2",
    "mamba3",
    "mom",
    "retnet",
    "rwkv6",
    "rwkv7",
    "swa",
)


def load_mixer_modules() -> None:
    """Import every module in ``MIXER_MODULES`` (each registers its classes once, when first imported)."""
    for module in MIXER_MODULES:
        importlib.import_module(f"recall_lm.layers.{module}")


def mixers() -> dict[str, type[nn.Module]]:
    """Every registered mixer class by name."""
    load_mixer_modules()
    return MIXERS


def register_mixer(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make a mixer buildable as ``build_mixer(name, d_model, **kwargs)``."""

    def decorate(cls: type[nn.Module]) -> type[nn.Module]:
        missing = missing_parts(cls)
        if missing:
            raise TypeError(
                f"mixer {name!r} ({getattr(cls, '__name__', cls)}) does not follow the mixer contract: "
                f"{'; '.join(missing)} (recall_lm.layers.contract)"
            )
        if name in MIXERS:
            raise ValueError(
                f"mixer {name!r} is registered twice ({MIXERS[name].__name__} and {cls.__name__})"
            )
        MIXERS[name] = cls
        cls.mixer_name = name
        return cls

    return decorate


def build_mixer(name: str, d_model: int, **kwargs) -> nn.Module:
    """Build the mixer registered as ``name``; unknown names and unknown keyword arguments fail clearly."""
    if name not in mixers():
        raise ValueError(f"unknown mixer {name!r}; known mixers: {', '.join(sorted(MIXERS))}")
    cls = MIXERS[name]
    accepted = inspect.signature(cls.__init__).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            allowed = sorted(p for p in accepted if p not in ("self", "d_model"))
            raise ValueError(f"mixer {name!r} got unknown argument(s) {unknown}; it accepts {allowed}")
    return cls(d_model, **kwargs)
