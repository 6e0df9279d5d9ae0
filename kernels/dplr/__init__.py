"""The diagonal-plus-low-rank delta-rule op family (RWKV-7), and KDA as its special case."""
from recall_lm.kernels.dplr.interface import dplr_delta_rule, dplr_delta_rule_step
from recall_lm.kernels.dplr.kda import kda_delta_rule, kda_delta_rule_step

__all__ = ["dplr_delta_rule", "dplr_delta_rule_step", "kda_delta_rule", "kda_delta_rule_step"]
