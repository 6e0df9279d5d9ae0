"""Sequence-mixing layers (one file per mixer), norms, MLPs, feature maps and the mixer registry.

Mixer protocol (every registered mixer):
    forward(x: [B, T, d_model], state=None) -> (y: [B, T, d_model], new_state)
        state None: the training path, new_state is None. Given a state (from init_state or a
        previous call), continue from it and return the state after the last token.
    init_state(batch_size, device, dtype) -> state   (a layers.state.MixerState)
    state_size(seq_len=1) -> int   numbers held per sequence while decoding

Every module of this package is imported here, so a mixer registers itself by living in it.
"""
import importlib
import pkgutil

from layers.mlp import MLPS, build_mlp, register_mlp
from layers.registry import MIXERS, build_mixer, register_mixer

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["MIXERS", "MLPS", "build_mixer", "build_mlp", "register_mixer", "register_mlp"]
