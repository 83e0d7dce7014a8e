"""Mask planning: from mode and prompt layout to the KV blocks a decode step reads."""

from .blocks import (PlanConfig, coverage, normalize, num_blocks, plan_dac, span_blocks,
                     tokens_in_blocks)
from .policies import (POLICIES, DACPolicy, FullPolicy, OraclePolicy, Policy, QuestPolicy,
                       SequenceState, StreamingPolicy, get_policy)

__all__ = [
    "POLICIES", "DACPolicy", "FullPolicy", "OraclePolicy", "PlanConfig", "Policy", "QuestPolicy",
    "SequenceState", "StreamingPolicy", "coverage", "get_policy", "normalize", "num_blocks",
    "plan_dac", "span_blocks", "tokens_in_blocks",
]
