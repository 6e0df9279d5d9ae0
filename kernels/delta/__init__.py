"""The gated delta-rule op family (DeltaNet, Gated DeltaNet, MoM's default memory)."""
from recall_lm.kernels.delta.interface import gated_delta_rule, gated_delta_rule_step

__all__ = ["gated_delta_rule", "gated_delta_rule_step"]
