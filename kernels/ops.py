"""The public ops of every kernel family, in one place:
``from recall_lm.kernels.ops import gated_delta_rule``.

One op family per subpackage (``gla``, ``swa``, ``delta``, ``dplr``, ``forgetting_attn``, ``log_linear``),
each with its backends (``forgetting_attn`` runs its Triton path on ``swa``'s kernels; ``log_linear`` has
no Triton kernels yet)."""
from recall_lm.kernels.delta import gated_delta_rule, gated_delta_rule_step
from recall_lm.kernels.dplr import dplr_delta_rule, dplr_delta_rule_step, kda_delta_rule, kda_delta_rule_step
from recall_lm.kernels.forgetting_attn import forgetting_attention, forgetting_attention_step
from recall_lm.kernels.gla import (
    gated_linear_attention,
    gated_linear_attention_step,
    signed_gated_linear_attention,
    signed_gated_linear_attention_step,
)
from recall_lm.kernels.log_linear import log_linear_attention, log_linear_attention_step
from recall_lm.kernels.swa import sliding_window_attention

__all__ = [
    "dplr_delta_rule",
    "dplr_delta_rule_step",
    "forgetting_attention",
    "forgetting_attention_step",
    "gated_delta_rule",
    "gated_delta_rule_step",
    "gated_linear_attention",
    "gated_linear_attention_step",
    "kda_delta_rule",
    "kda_delta_rule_step",
    "log_linear_attention",
    "log_linear_attention_step",
    "signed_gated_linear_attention",
    "signed_gated_linear_attention_step",
    "sliding_window_attention",
]
