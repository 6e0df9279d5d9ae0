"""Autoregressive generation: chunked prefill, then O(1)-per-token decoding with each mixer's state.

Prompts of different lengths are decoded in lock-step without padding: all prompts are prefilled
together up to the shortest length (one chunked call per layer), then every sequence advances one
token per step, fed from its own prompt while it lasts (teacher forcing) and from its own samples
afterwards. Each sequence therefore sees exactly its own tokens, for every kind of mixer state.
"""
from __future__ import annotations

from dataclasses import fields

import torch


def sample_next(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None,
                generator: torch.Generator | None) -> torch.Tensor:
    """logits [B, V] -> token ids [B]. Greedy when temperature is 0."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs > top_p  # keep the smallest prefix whose mass reaches top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


_compiled_step = None


def _step(model, tokens: torch.Tensor, state):
    out = model(tokens, state)
    return out.logits[:, -1], out.state


def call_signature(model, tokens: torch.Tensor, state) -> tuple | None:
    """Everything torch.compile's guards on a decode step can depend on: the model, its mode, the grad
    mode, autocast on the token's device (on or off, and its dtype), the token tensor and, per layer
    state, its type and every field (tensors by what dynamo's tensor guards check: shape, strides, dtype,
    device, requires_grad, inference or not; Python numbers by value). None when a field is anything else
    (e.g. the KV cache's shared frontier list), which never matches."""
    device = tokens.device.type
    autocast = torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device)
    parts = [id(model), model.training, torch.is_grad_enabled(), torch.is_inference_mode_enabled(), autocast,
             tokens.shape, tokens.stride(), tokens.dtype, tokens.device, tokens.is_inference()]
    for layer in state.layer_states():
        parts.append(type(layer))
        for f in fields(layer):
            value = getattr(layer, f.name)
            if torch.is_tensor(value):
                parts.append((value.shape, value.stride(), value.dtype, value.device, value.requires_grad,
                              value.is_inference()))
            elif value is None or isinstance(value, (bool, int, float, str)):
                parts.append(value)
            else:
                return None
    return tuple(parts)


class CompiledDecodeStep:
    """``decode_step(model, compile=True)``: the compiled step, whose guards stop being evaluated once
    they cannot change the outcome.

    torch.compile checks a few hundred guards (every parameter and state tensor) on each call: 0.2-0.5
    ms here, a fifth of a small model's step on a CPU. A call whose :func:`call_signature` equals the
    previous ``warm_calls`` guarded calls' (same model, mode, shapes, dtypes and Python numbers: a
    fixed-size state advanced by one token) would pass the same guards, so it runs under
    ``torch.compiler.set_stance(skip_guard_eval_unsafe=True)``, which evaluates only the guards that
    tell cached graphs apart. States that change shape or carry changing numbers (a KV cache, whose
    length grows) never match and keep every guard. Make one object per decoding loop (``generate``
    does): a model changed in place between its calls in ways the signature does not see (a module
    swapped, one parameter replaced) needs a fresh one; casting or moving the model is seen.
    """

    def __init__(self, model, warm_calls: int = 2):
        global _compiled_step
        if _compiled_step is None:
            _compiled_step = torch.compile(_step)  # one cache entry per model (guarded on its identity)
        self.model, self.warm_calls = model, warm_calls
        self._probe = next(model.parameters())  # a cast or move of the model changes its dtype/device
        self._signature, self._guarded_calls = None, 0
        self.unguarded_calls = 0

    def __call__(self, tokens: torch.Tensor, state):
        signature = call_signature(self.model, tokens, state)
        if signature is not None:
            signature += (self._probe.dtype, self._probe.device)
        if signature is not None and signature == self._signature and self._guarded_calls >= self.warm_calls:
            self.unguarded_calls += 1
            with torch.compiler.set_stance("default", skip_guard_eval_unsafe=True):
                return _compiled_step(self.model, tokens, state)
        out = _compiled_step(self.model, tokens, state)
        if signature is not None and signature == self._signature:
            self._guarded_calls += 1
        else:
            self._signature, self._guarded_calls = signature, 1
        return out


def decode_step(model, compile: bool = False):
    """The single-token step ``(tokens [B, 1], state) -> (logits [B, vocab], state)`` of ``model``.

    ``compile=True``: the step through ``torch.compile`` (inductor, shapes specialised until one
    changes), compiled once per model, so later calls reuse the compiled code; guards are skipped
    once they cannot matter (:class:`CompiledDecodeStep`). The first call compiles (tens of seconds
    on a CPU); afterwards a step of a small model costs a fraction of eager PyTorch's per-operator
    overhead. Outputs equal the eager step's up to floating-point reassociation.
    """
    if not compile:
        return lambda tokens, state: _step(model, tokens, state)
    return CompiledDecodeStep(model)


@torch.no_grad()
def generate(model, input_ids, max_new_tokens: int, *, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, eos_token_id: int | None = None, seed: int | None = None,
             compile: bool = False):
    """Generate up to ``max_new_tokens`` after each prompt.

    input_ids: a LongTensor [B, T] (equal-length prompts) or a list of 1-D LongTensors (any lengths).
    ``compile``: decode through ``decode_step(model, compile=True)`` (the prefill stays eager).
    Returns a list of B 1-D LongTensors: prompt followed by its generated tokens (ending at
    ``eos_token_id`` when it is produced).
    """
    prompts = list(input_ids) if not torch.is_tensor(input_ids) else list(input_ids.unbind(0))
    if not prompts or any(p.ndim != 1 or p.numel() == 0 for p in prompts):
        raise ValueError("generate: input_ids must be [B, T] with T ≥ 1, or a list of non-empty 1-D tensors")
    if max_new_tokens < 0 or temperature < 0:
        raise ValueError("generate: max_new_tokens and temperature must be ≥ 0")
    device = next(model.parameters()).device
    prompts = [p.to(device) for p in prompts]
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)

    B = len(prompts)
    lengths = torch.tensor([p.numel() for p in prompts], device=device)
    shortest, longest = int(lengths.min()), int(lengths.max())
    # Tokens of every sequence in one [B, longest + max_new_tokens] buffer; prompts fill the start.
    tokens = torch.zeros(B, longest + max_new_tokens, dtype=torch.long, device=device)
    for b, p in enumerate(prompts):
        tokens[b, : p.numel()] = p
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    ends = lengths + max_new_tokens  # exclusive end of each sequence

    was_training = model.training
    model.eval()
    state = model.init_state(B, device=device)
    out = model(tokens[:, :shortest], state)
    logits, state = out.logits[:, -1], out.state
    step = decode_step(model, compile)
    for position in range(shortest, int(ends.max())):
        next_token = sample_next(logits, temperature, top_k, top_p, generator)
        generating = (position >= lengths) & (position < ends) & ~finished
        tokens[:, position] = torch.where(generating, next_token, tokens[:, position])
        if eos_token_id is not None:
            newly = generating & (next_token == eos_token_id)
            ends = torch.where(newly, position + 1, ends)
            finished |= newly
        if bool(((position + 1 >= ends) | finished).all()):
            break
        logits, state = step(tokens[:, position : position + 1], state)
    model.train(was_training)
    return [tokens[b, : int(ends[b])] for b in range(B)]
