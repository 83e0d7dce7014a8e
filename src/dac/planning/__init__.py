"""Mask planning: from mode and prompt layout to the KV blocks a decode step reads."""

from .blocks import (PlanConfig, coverage, normalize, num_blocks, plan_dac, span_blocks,
                     tokens_in_blocks)
from .policies import (POLICIES, Capability, DACPolicy, FullPolicy, OraclePolicy, Policy,
                       QuestPolicy, SequenceState, StreamingPolicy, UnsupportedPolicyError,
                       check_policy)
from .safety import SafetyNet
from .spec import get_policy, parse_policy

__all__ = [
    "POLICIES", "Capability", "DACPolicy", "FullPolicy", "OraclePolicy", "PlanConfig", "Policy",
    "QuestPolicy", "SafetyNet", "SequenceState", "StreamingPolicy", "UnsupportedPolicyError",
    "check_policy", "coverage", "get_policy", "normalize", "num_blocks", "parse_policy",
    "plan_dac", "span_blocks", "tokens_in_blocks",
]
