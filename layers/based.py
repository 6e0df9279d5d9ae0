"""BASED linear attention: normalised linear attention with the second-order Taylor feature map."""
from __future__ import annotations

from recall_lm.layers.attention import split_heads
from recall_lm.layers.linear_attention import LinearAttention
from recall_lm.layers.registry import register_mixer


@register_mixer("based")
class Based(LinearAttention):
    """o_t = Σ_{s≤t} κ(q_t, k_s) v_s / (Σ_{s≤t} κ(q_t, k_s) + eps),  κ(q, k) = 1 + q·k/√d + (q·k)²/(2d).

    The linear-attention half of BASED (Arora et al., 2024; HazyResearch/based ``LinearAttention``
    and Zoology's ``Based``): q and k are projected to ``feature_dim`` = d (16) per head, κ is the
    second-order Taylor expansion of exp(q·k/√d) computed as φ(q)·φ(k) with φ = TaylorFeatureMap
    (the 1/d^¼ and 1/(√2·√d) scalings are inside φ, so the kernel runs with scale 1). ``symmetric``
    (default) keeps the upper triangle of x ⊗ x: the same κ with 1 + d + d(d+1)/2 = 153 features
    instead of 273 at d = 16. Values keep d_model / num_heads per head; the normaliser rides as a
    ones column, so the state is [B, H, 153, d_model/H + 1]. Since 1 + x + x²/2 ≥ ½, the denominator
    is ≥ (t + 1)/2 and ``eps`` (the reference's 1e-12) only guards the degenerate case.
    The reference's ``num_key_value_heads`` must equal ``num_heads`` (fla asserts it), so it is not a
    separate argument. This is LinearAttention with BASED's defaults; all computation is inherited.
    x: [B, T, d_model] -> y: [B, T, d_model].
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int = 1,
        feature_dim: int = 16,
        symmetric: bool = True,
        eps: float = 1e-12,
    ):
        split_heads(d_model, num_heads, "based")
        if feature_dim < 1:
            raise ValueError(f"based: feature_dim must be ≥ 1, got {feature_dim}")
        super().__init__(
            d_model,
            num_heads=num_heads,
            feature_map="taylor_symmetric" if symmetric else "taylor",
            feature_dim=feature_dim,
            normalize=True,
            eps=eps,
        )
