"""A ``transformers`` face for exported folders. The registration is explicit and needs nothing imported
before it::

    import recall_lm.models.hf  # registers model type "recall_lm" with AutoConfig and AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(out_dir)   # a folder from python -m recall_lm.models.export

returns a working model for ``forward`` and ``generate``. Importing this module is the registration (it
calls ``register()``, which may be called again); nothing else in the project imports transformers, so
loading a model never pays transformers' few seconds of import unless asked to.

The wrapper keeps the project's own decoding: ``generate`` is ``recall_lm.models.generation.generate``
(chunked prefill, then O(1)-per-token recurrent decoding) behind transformers' argument names; no
transformers cache class is involved.
"""
from __future__ import annotations

from dataclasses import asdict, fields

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from recall_lm.models.config import IGNORE_INDEX, ModelConfig
from recall_lm.models.pretrained import (
    ARCHITECTURE,
    MODEL_TYPE,
    load_pretrained,
    read_config,
    save_pretrained,
)

_FIELDS = [f.name for f in fields(ModelConfig)]


class RecallLMConfig(PretrainedConfig):
    """The ModelConfig's fields as a transformers config (``to_model_config`` gives them back)."""

    model_type = MODEL_TYPE

    def __init__(self, **kwargs):
        own = {k: kwargs.pop(k) for k in list(kwargs) if k in _FIELDS}
        defaults = asdict(ModelConfig())
        for name in _FIELDS:
            setattr(self, name, own.get(name, defaults[name]))
        kwargs.setdefault("tie_word_embeddings", bool(self.tie_embeddings))
        super().__init__(**kwargs)

    def to_model_config(self) -> ModelConfig:
        return ModelConfig(**{name: getattr(self, name) for name in _FIELDS})


class RecallLMForCausalLM(PreTrainedModel):
    """A DecoderLM (``self.lm``) behind ``PreTrainedModel``. forward(input_ids [B, T], labels=None) ->
    CausalLMOutput(loss, logits [B, T, vocab]); ``generate`` decodes with the model's own state."""

    config_class = RecallLMConfig
    base_model_prefix = "lm"
    main_input_name = "input_ids"

    def __init__(self, config: RecallLMConfig, lm=None):
        super().__init__(config)
        from recall_lm.models.decoder import DecoderLM

        self.lm = lm if lm is not None else DecoderLM(config.to_model_config())

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, config=None, **kwargs):
        """An exported folder (local): the weights load through ``recall_lm.models.pretrained``
        (safetensors, the DecoderLM's own key names), not through transformers' weight-loading machinery."""
        device = kwargs.pop("device_map", None) or "cpu"
        dtype = kwargs.pop("torch_dtype", None) or kwargs.pop("dtype", None)
        lm = load_pretrained(
            pretrained_model_name_or_path, map_location=device if isinstance(device, str) else "cpu"
        )
        if isinstance(config, RecallLMConfig):
            hf_config = config
        else:
            hf_config = RecallLMConfig(**asdict(read_config(pretrained_model_name_or_path)))
        model = cls(hf_config, lm=lm)
        if isinstance(dtype, torch.dtype):
            model = model.to(dtype)
        return model.eval()

    def save_pretrained(self, save_directory, *args, **kwargs):
        save_pretrained(self.lm, save_directory)

    def get_input_embeddings(self):
        return self.lm.embedding

    def get_output_embeddings(self):
        return self.lm.head

    def forward(
        self, input_ids: torch.Tensor, labels: torch.Tensor | None = None, **kwargs
    ) -> CausalLMOutput:
        logits = self.lm(input_ids).logits
        loss = None
        if labels is not None:  # transformers' convention: labels are the inputs, shifted here
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX
            )
        return CausalLMOutput(loss=loss, logits=logits)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int = 20, do_sample: bool = False,
                 temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 eos_token_id: int | None = None, pad_token_id: int | None = None, attention_mask=None,
                 seed: int | None = None, **unused) -> torch.Tensor:
        """input_ids [B, T] (equal-length prompts; an attention_mask must be all ones) -> [B, T + new],
        sequences that stop early at ``eos_token_id`` padded with ``pad_token_id`` (default: the EOS)."""
        if unused:
            raise ValueError(f"RecallLMForCausalLM.generate does not support {sorted(unused)}")
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError("RecallLMForCausalLM.generate takes equal-length prompts (no left padding); "
                             "call it once per prompt length")
        from recall_lm.models.generation import generate

        outs = generate(self.lm, input_ids, max_new_tokens, temperature=temperature if do_sample else 0.0,
                        top_k=top_k, top_p=top_p, eos_token_id=eos_token_id, seed=seed)
        pad = pad_token_id if pad_token_id is not None else (eos_token_id if eos_token_id is not None else 0)
        width = max(o.numel() for o in outs)
        result = torch.full((len(outs), width), pad, dtype=torch.long, device=input_ids.device)
        for b, o in enumerate(outs):
            result[b, : o.numel()] = o
        return result


RecallLMConfig.architectures = [ARCHITECTURE]


def register() -> None:
    """Make ``AutoConfig`` / ``AutoModelForCausalLM`` know model type ``recall_lm`` (idempotent)."""
    AutoConfig.register(MODEL_TYPE, RecallLMConfig, exist_ok=True)
    AutoModelForCausalLM.register(RecallLMConfig, RecallLMForCausalLM, exist_ok=True)


register()
