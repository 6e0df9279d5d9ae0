"""The maths: chunked scan kernels. Public functions only; one op family per subpackage."""
from kernels.delta import gated_delta_rule, gated_delta_rule_step
from kernels.dplr import dplr_delta_rule, dplr_delta_rule_step
from kernels.gla import gated_linear_attention, gated_linear_attention_step
from kernels.swa import sliding_window_attention

__all__ = ["dplr_delta_rule", "dplr_delta_rule_step", "gated_delta_rule", "gated_delta_rule_step", "gated_linear_attention", "gated_linear_attention_step", "sliding_window_attention"]
