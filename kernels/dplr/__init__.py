"""The diagonal-plus-low-rank delta-rule op family (RWKV-7)."""
from recall_lm.kernels.dplr.interface import dplr_delta_rule, dplr_delta_rule_step

__all__ = ["dplr_delta_rule", "dplr_delta_rule_step"]
