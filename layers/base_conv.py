"""BASED's short gated convolution (BaseConv): the local token mixer of the BASED hybrid."""
from __future__ import annotations

import torch
from torch import nn

from recall_lm.layers.contract import Mixer
from recall_lm.layers.flops import linear_flops, short_conv_flops
from recall_lm.layers.registry import register_mixer
from recall_lm.layers.short_conv import ConvState, ShortConvolution


@register_mixer("base_conv")
class BaseConv(Mixer):
    """y = W_out( act(conv(a)) ⊙ b ),  [a, b] = W_in x split in two halves of width E = expand·d_model/2.

    The gated short convolution of BASED (Arora et al., 2024, "Simple linear attention language
    models balance the recall-throughput tradeoff"; HazyResearch/based ``BaseConv``): a depthwise
    causal convolution of ``kernel_size`` taps (3 by default) over one half of the input projection,
    gated by the other half, then projected back. As in the BASED reference, both projections have
    biases and the convolution output goes through SiLU (``activation=None`` gives Zoology's
    un-activated gate); the reference 360M model uses ``expand=4``.

    ``variant="zoology"`` is Zoology's MQAR BaseConv instead (``zoology/mixers/base_conv.py``):
    y = conv(x) ⊙ (W x + b) + x — the convolution (with bias) over the whole input, no activation, no
    output projection, and an internal skip; ``expand`` and ``activation`` do not apply to it.
    Decoding state: the last kernel_size - 1 inputs of the convolution (``ConvState`` [B, K - 1, E],
    E = d_model for the Zoology variant).
    x: [B, T, d_model] -> y: [B, T, d_model].
    """

    VARIANTS = ("based", "zoology")

    def __init__(
        self,
        d_model: int,
        kernel_size: int = 3,
        expand: int = 2,
        bias: bool = True,
        activation: str | None = "silu",
        variant: str = "based",
    ):
        super().__init__()
        if variant not in self.VARIANTS:
            raise ValueError(f"base_conv: variant must be one of {self.VARIANTS}, got {variant!r}")
        self.d_model, self.variant = d_model, variant
        if variant == "zoology":
            if expand != 2 or activation is not None:
                raise ValueError("base_conv: variant='zoology' has no expand or activation option "
                                 f"(got expand={expand}, activation={activation!r}; set activation: null)")
            self.inner = d_model
            self.projection = nn.Linear(d_model, d_model, bias=bias)
            self.conv = ShortConvolution(d_model, kernel_size, bias=bias)
            self.residual_projections = ()
            return
        if expand < 1 or (expand * d_model) % 2:
            raise ValueError(
                f"base_conv: expand={expand} must be ≥ 1 with expand·d_model={expand * d_model} even"
            )
        self.inner = expand * d_model // 2
        self.in_proj = nn.Linear(d_model, 2 * self.inner, bias=bias)
        self.conv = ShortConvolution(self.inner, kernel_size, activation=activation)
        self.out_proj = nn.Linear(self.inner, d_model, bias=bias)
        self.residual_projections = ("out_proj",)

    def forward(self, x: torch.Tensor, state: ConvState | None = None,
                documents=None) -> tuple[torch.Tensor, ConvState | None]:
        if self.variant == "zoology":
            conv, new_state = self.conv(x, state, documents)
            return conv * self.projection(x) + x, new_state
        a, b = self.in_proj(x).chunk(2, dim=-1)
        a, new_state = self.conv(a, state, documents)
        return self.out_proj(a * b), new_state

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> ConvState:
        return self.conv.init_state(batch_size, device, dtype)

    def state_size(self, seq_len: int = 1) -> int:
        return self.conv.state_size(seq_len)

    def flops_per_token(self, seq_len: int) -> float:
        if self.variant == "zoology":
            return linear_flops(self.projection) + short_conv_flops(self.conv)
        return linear_flops(self.in_proj) + linear_flops(self.out_proj) + short_conv_flops(self.conv)
