"""Lightning's FSDP strategy with this codebase's defaults: one unit per Block, bf16 with fp32 decays.

Selected in YAML (configs/strategies/_fsdp.yaml) as ``recall_lm.training.fsdp.BlockFSDPStrategy``. Lightning's
FSDP needs CUDA; on CPU the equivalent sharding is tested with torch FSDP2 (tests/test_distributed.py).
"""
from __future__ import annotations

import importlib

import torch
from lightning.pytorch.strategies import FSDPStrategy


def default_fp32_modules() -> tuple[type, ...]:
    """The mixers whose parameters include log-decays / bonuses that bf16 would round
    (``keep_fp32_under_fsdp`` in the mixer contract: RWKV-6, MoM). RWKV-7, Mamba-2 and Gated DeltaNet do
    not set it: like fla's FSDP training they compute with bf16 copies of their decay parameters (the fp32
    masters stay in the optimiser); name them in fp32_modules to keep them fp32."""
    from recall_lm.layers.registry import mixers

    return tuple(cls for cls in mixers().values() if cls.keep_fp32_under_fsdp)


def _import(path: str) -> type:
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise ValueError(f"BlockFSDPStrategy: cannot import {path!r} (give module.Class)") from e


def _dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"BlockFSDPStrategy: unknown dtype {name!r} (e.g. bfloat16, float16, float32)")
    return dtype


class BlockFSDPStrategy(FSDPStrategy):
    """FSDPStrategy wrapping each ``recall_lm.models.decoder.Block``, with mixed precision that keeps
    decays fp32.

    Args:
        param_dtype: dtype of the gathered parameters for compute ("bfloat16"; "float32" = off).
        reduce_dtype: dtype of the gradient reduce-scatter ("float32").
        fp32_modules: classes (module.Class) kept in fp32 parameters: their own FSDP unit with mixed
            precision disabled (FSDP's ``_module_classes_to_ignore``); default: ``default_fp32_modules()``.
        activation_checkpointing: recompute each Block's activations in the backward.
        **kwargs: FSDPStrategy's (sharding_strategy, state_dict_type, cpu_offload, ...).
    """

    def __init__(self, param_dtype: str = "bfloat16", reduce_dtype: str = "float32",
                 fp32_modules: list[str] | tuple[str, ...] | None = None,
                 activation_checkpointing: bool = False, **kwargs):
        from torch.distributed.fsdp import MixedPrecision
        from torch.nn.modules.batchnorm import _BatchNorm

        from recall_lm.models.decoder import Block

        keep = default_fp32_modules() if fp32_modules is None else tuple(_import(p) for p in fp32_modules)
        keep += (_BatchNorm,)
        mixed = MixedPrecision(param_dtype=_dtype(param_dtype), reduce_dtype=_dtype(reduce_dtype),
                               buffer_dtype=torch.float32, _module_classes_to_ignore=keep)
        # The CLI passes every FSDPStrategy argument, unset ones as None: fill those, not just missing keys.
        if kwargs.get("auto_wrap_policy") is None:
            kwargs["auto_wrap_policy"] = {Block}
        if activation_checkpointing and kwargs.get("activation_checkpointing_policy") is None:
            kwargs["activation_checkpointing_policy"] = {Block}
        super().__init__(mixed_precision=mixed, **kwargs)
