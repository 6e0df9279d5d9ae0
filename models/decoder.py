"""DecoderLM: embedding → pre-norm blocks (mixer, optional MLP) → final norm → tied LM head."""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import torch
from torch import nn

from recall_lm.layers.documents import Documents
from recall_lm.layers.mlp import build_mlp, mlps
from recall_lm.layers.norms import build_norm
from recall_lm.layers.registry import build_mixer, mixers
from recall_lm.models.config import IGNORE_INDEX, ModelConfig
from recall_lm.models.state import ModelState


@dataclass
class LMOutput:
    """logits: [B, T, vocab] (or [N, vocab] at the N positions of ``logits_at``); state: the decoding
    state after the last token (None in training);
    aux_loss: a scalar of auxiliary losses returned by mixers (e.g. MoM load balancing), or 0.
    With ``labels`` (the chunked loss): logits None, loss the mean cross-entropy over labelled positions,
    correct [B, T] bool (argmax == label at labelled positions)."""

    logits: torch.Tensor | None
    state: ModelState | None
    aux_loss: torch.Tensor
    loss: torch.Tensor | None = None
    correct: torch.Tensor | None = None


def _accepted(cls, kwargs: dict) -> dict:
    """The entries of ``kwargs`` that ``cls.__init__`` names (e.g. layer_idx / n_layers for RWKV-6's init)."""
    if cls is None:
        return {}
    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in kwargs.items() if k in params}


class Block(nn.Module):
    """x + mixer(norm(x)), then x + mlp(norm(x)) when the block has an MLP."""

    def __init__(self, mixer_name: str, config: ModelConfig, layer_idx: int = 0):
        super().__init__()
        self.mixer_name = mixer_name
        self.mixer_norm = build_norm(config.norm, config.d_model, config.norm_eps)
        where = {"layer_idx": layer_idx, "n_layers": config.n_layers,  # the block's place wins over YAML
                 "first_of_its_kind": config.layer_mixers().index(mixer_name) == layer_idx}
        mixer_kwargs = {
            **config.mixer_kwargs.get(mixer_name, {}),
            **_accepted(mixers().get(mixer_name), where),
        }
        self.mixer = build_mixer(mixer_name, config.d_model, **mixer_kwargs)
        mlp_kwargs = {**config.mlp_kwargs, **_accepted(mlps().get(config.mlp), where)}
        self.mlp = build_mlp(config.mlp, config.d_model, **mlp_kwargs)
        self.mlp_norm = (
            build_norm(config.norm, config.d_model, config.norm_eps) if self.mlp is not None else None
        )

    @property
    def mlp_is_stateful(self) -> bool:
        return self.mlp is not None and hasattr(self.mlp, "init_state")

    def forward(self, x, mixer_state=None, mlp_state=None, shared: dict | None = None, documents=None):
        """``shared``: one dict per model forward, for mixers that read what an earlier layer left
        (``uses_shared``: RWKV-7's value residual from the first layer). ``documents``: packed documents
        (``recall_lm.layers.documents.Documents``) that the mixer and a stateful MLP keep apart."""
        extra = {} if documents is None else {"documents": documents}
        if self.mixer.uses_shared:
            extra["shared"] = shared
        mixed, mixer_state = self.mixer(self.mixer_norm(x), mixer_state, **extra)
        x = x + mixed
        if self.mlp is not None:
            if self.mlp_is_stateful:
                out, mlp_state = self.mlp(self.mlp_norm(x), mlp_state,
                                          **({} if documents is None else {"documents": documents}))
            else:
                out = self.mlp(self.mlp_norm(x))
            x = x + out
        return x, mixer_state, mlp_state


class DecoderLM(nn.Module):
    """A decoder language model over any registered mixers (see ModelConfig)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.embed_dropout = nn.Dropout(config.embed_dropout)
        self.blocks = nn.ModuleList(Block(name, config, i) for i, name in enumerate(config.layer_mixers()))
        self.norm = build_norm(config.norm, config.d_model, config.norm_eps)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.apply(self._init_generic)
        for module in self.modules():  # mixers with their own initialisation (e.g. RWKV-6) apply it last
            if module is not self and hasattr(module, "reset_mixer_parameters"):
                module.reset_mixer_parameters()
        if config.scaled_residual_init:
            self._scale_residual_projections()
        if config.tie_embeddings:
            self.head.weight = self.embedding.weight

    def _init_generic(self, module: nn.Module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.config.init_std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def _scale_residual_projections(self):
        """std init_std/√(2·n_layers) for each layer's ``residual_projections``
        (ModelConfig.scaled_residual_init)."""
        std = self.config.init_std / math.sqrt(2 * self.config.n_layers)
        for block in self.blocks:
            for layer in (block.mixer, block.mlp):
                for name in getattr(layer, "residual_projections", ()):
                    nn.init.normal_(getattr(layer, name).weight, std=std)

    def check_token_ids(self, input_ids: torch.Tensor) -> None:
        """Raise a ValueError naming the bad id when ``input_ids`` holds one outside [0, vocab_size): torch's
        own error is ``IndexError: index out of range in self``. On CPU only: on a GPU the check would
        wait for the device every step, and the embedding kernel asserts there itself."""
        if input_ids.device.type != "cpu" or input_ids.numel() == 0 or torch.compiler.is_compiling():
            return
        low, high = (int(v) for v in torch.aminmax(input_ids))
        if low < 0 or high >= self.config.vocab_size:
            bad = low if low < 0 else high
            raise ValueError(
                f"token id {bad} is outside the model's vocabulary [0, {self.config.vocab_size}) "
                "(ModelConfig.vocab_size)"
            )

    def forward(self, input_ids: torch.Tensor, state: ModelState | None = None,
                logits_at: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                loss_chunk_rows: int = 4096, cu_seqlens: torch.Tensor | None = None) -> LMOutput:
        """input_ids: [B, T] -> LMOutput. Pass ``state`` (from ``init_state``) to prefill or decode.

        ``cu_seqlens`` (int ``[N+1]``, with ``input_ids [1, T]`` and no state): documents packed along the
        row, each treated as its own sequence by every layer (document-masked packing, as fla / flame
        train): outputs equal running each document alone.

        ``logits_at`` (bool [B, T]) computes the head only at those positions: logits [N, vocab] in
        row-major order of the mask. Training on MQAR needs them only at its labelled positions (4 of
        64 at Zoology's S1), where the vocabulary-wide head is most of the step's cost.

        ``labels`` ([B, T], -100 ignored) computes the head and the cross-entropy ``loss_chunk_rows`` rows
        at a time (recall_lm.models.linear_cross_entropy) instead of returning logits: no [B, T, vocab]
        tensor.
        """
        self.check_token_ids(input_ids)
        documents = None
        if cu_seqlens is not None:
            if input_ids.shape[0] != 1 or state is not None:
                raise ValueError("cu_seqlens packs documents into one row: input_ids must be [1, T] and "
                                 f"state None (got input_ids {tuple(input_ids.shape)}, state "
                                 f"{'given' if state is not None else 'None'})")
            documents = Documents.from_cu_seqlens(cu_seqlens, input_ids.shape[1], device=input_ids.device)
        x = self.embed_dropout(self.embedding(input_ids))
        new_mixers, new_mlps = [], []
        shared: dict = {}  # what one layer leaves for later ones within this forward (RWKV-7's first v)
        for i, block in enumerate(self.blocks):
            x, mixer_state, mlp_state = block(
                x,
                None if state is None else state.mixers[i],
                None if state is None else state.mlps[i],
                shared,
                documents,
            )
            new_mixers.append(mixer_state)
            new_mlps.append(mlp_state)
        aux = [m.aux_loss for m in self.modules() if getattr(m, "aux_loss", None) is not None]
        aux_loss = torch.stack(aux).sum() if aux else x.new_zeros((), dtype=torch.float32)
        new_state = None if state is None else ModelState(new_mixers, new_mlps)
        if labels is not None:
            from recall_lm.models.linear_cross_entropy import linear_cross_entropy

            hidden = self.norm(x).flatten(0, 1)
            total, correct = linear_cross_entropy(hidden, self.head.weight, labels.flatten(), loss_chunk_rows)
            count = (labels != IGNORE_INDEX).sum().clamp(min=1)
            return LMOutput(None, new_state, aux_loss, total / count, correct.view_as(labels))
        if logits_at is not None:
            x = x[logits_at]
        logits = self.head(self.norm(x))
        return LMOutput(logits, new_state, aux_loss)

    def save_pretrained(self, out_dir, tokenizer=None):
        """Write config.json + model.safetensors (+ the tokenizer) to ``out_dir``; see
        models/pretrained.py."""
        from recall_lm.models.pretrained import save_pretrained

        return save_pretrained(self, out_dir, tokenizer)

    @classmethod
    def from_pretrained(cls, path, map_location="cpu") -> "DecoderLM":
        """The model of a folder written by ``save_pretrained`` / ``python -m recall_lm.models.export``
        (eval mode)."""
        from recall_lm.models.pretrained import load_pretrained

        return load_pretrained(path, map_location)

    def generate(self, input_ids, max_new_tokens: int, **kwargs):
        """Sample continuations; see ``recall_lm.models.generation.generate`` for the arguments."""
        from recall_lm.models.generation import generate

        return generate(self, input_ids, max_new_tokens, **kwargs)

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> ModelState:
        mixers = [b.mixer.init_state(batch_size, device, dtype) for b in self.blocks]
        mlps = [
            b.mlp.init_state(batch_size, device, dtype) if b.mlp_is_stateful else None for b in self.blocks
        ]
        return ModelState(mixers, mlps)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        total = sum(p.numel() for p in self.parameters())  # tied weights are counted once
        return total - self.embedding.weight.numel() if exclude_embeddings else total

    def flops_per_token(self, seq_len: int, training: bool = False) -> float:
        """Analytic forward FLOPs per token at length ``seq_len`` (3× with ``training``); see
        models/flops.py."""
        from recall_lm.models.flops import model_flops_per_token

        return (3.0 if training else 1.0) * model_flops_per_token(self, seq_len)

    def state_size(self, seq_len: int = 1) -> int:
        """Numbers held per sequence while decoding after ``seq_len`` tokens (KV caches grow with it)."""
        total = 0
        for block in self.blocks:
            total += block.mixer.state_size(seq_len)
            if block.mlp_is_stateful:
                total += block.mlp.state_size(seq_len)
        return total

    def state_bytes(self, seq_len: int = 1, dtype: torch.dtype | None = None) -> int:
        """Bytes held per sequence while decoding after ``seq_len`` tokens, activations in ``dtype``.

        ``dtype`` (default: the parameters' dtype) is what ``init_state`` gets: KV caches, conv and
        token-shift states follow it, while recurrent memories stay fp32 (and RetNet's position is an
        int64). Each layer's ``init_state`` is built on the meta device (no memory) to read the real
        dtype of every tensor; numbers beyond those in the initial state (a KV cache growing to
        ``seq_len``) take the element size of the tensors that start empty (the cache).
        """
        if dtype is None:
            dtype = next(self.parameters()).dtype
        layers = [b.mixer for b in self.blocks] + [b.mlp for b in self.blocks if b.mlp_is_stateful]
        total = 0
        for layer in layers:
            if hasattr(layer, "state_bytes"):  # a state whose growing tensors differ in dtype says it itself
                total += layer.state_bytes(seq_len, dtype)
                continue
            tensors = layer.init_state(1, device="meta", dtype=dtype).tensors()
            total += sum(t[0].numel() * t.element_size() for t in tensors)
            grown = layer.state_size(seq_len) - sum(t[0].numel() for t in tensors)
            if grown:
                growing = [t.element_size() for t in tensors if t.numel() == 0] or [dtype.itemsize]
                total += grown * max(growing)
        return total
