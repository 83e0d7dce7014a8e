"""A vLLM logits processor that makes a request write given token ids first (teacher forcing).

Enabled per request with ``extra_args={"force_token_ids": [...]}``: step ``t`` may only sample
``force_token_ids[t]``; afterwards the model chooses. Log-probabilities are unaffected (vLLM
reports raw log-probabilities, computed before logits processors), so a forced continuation is
scored exactly as the model sees it. Used by the tests to make a random model "write"
directives, the counterpart of the Hugging Face engine's ``ForceText``.

Pass the class to the engine: ``LLM(..., logits_processors=[ForcedTokensLogitsProcessor])``.
"""

from __future__ import annotations

from typing import Any

import torch
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor


class ForcedTokensLogitsProcessor(AdapterLogitsProcessor):
    def is_argmax_invariant(self) -> bool:
        return False

    def new_req_logits_processor(self, params: Any):
        script = (getattr(params, "extra_args", None) or {}).get("force_token_ids")
        if not script:
            return None
        script = [int(t) for t in script]

        def force(output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
            step = len(output_ids)
            if step < len(script):
                tok = script[step]
                logits = torch.full_like(logits, float("-inf"))
                logits[tok] = 0.0
            return logits

        return force
