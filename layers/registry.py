"""The mixer registry: every sequence-mixing layer is registered by name and built from (d_model, **kwargs)."""
from __future__ import annotations

import inspect
from typing import Callable

from torch import nn

MIXERS: dict[str, type[nn.Module]] = {}


def register_mixer(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make a mixer buildable as ``build_mixer(name, d_model, **kwargs)``."""

    def decorate(cls: type[nn.Module]) -> type[nn.Module]:
        if name in MIXERS:
            raise ValueError(f"mixer {name!r} is registered twice ({MIXERS[name].__name__} and {cls.__name__})")
        MIXERS[name] = cls
        cls.mixer_name = name
        return cls

    return decorate


def build_mixer(name: str, d_model: int, **kwargs) -> nn.Module:
    """Build the mixer registered as ``name``; unknown names and unknown keyword arguments fail clearly."""
    if name not in MIXERS:
        raise ValueError(f"unknown mixer {name!r}; known mixers: {', '.join(sorted(MIXERS))}")
    cls = MIXERS[name]
    accepted = inspect.signature(cls.__init__).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            allowed = sorted(p for p in accepted if p not in ("self", "d_model"))
            raise ValueError(f"mixer {name!r} got unknown argument(s) {unknown}; it accepts {allowed}")
    return cls(d_model, **kwargs)
