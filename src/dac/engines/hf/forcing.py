"""Teacher forcing for ``model.generate``: each row writes given token ids first.

Used by the tests to make a random model "write" directives, and by
``bench/forced_steps.py`` to give a trained model the first steps of its ideal answer; the
counterpart of :mod:`dac.engines.vllm.forcing` on the vLLM side.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor


class ForceText(LogitsProcessor):
    """Forces the given token ids, one per step, per batch row (then lets the model choose).
    ``prompt_width``: the left-padded prompt width ``model.generate`` starts from."""

    def __init__(self, scripts: list[list[int]], prompt_width: int):
        self.scripts = scripts
        self.width = prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.width
        for b, script in enumerate(self.scripts):
            if step < len(script):
                scores[b] = float("-inf")
                scores[b, script[step]] = 0.0
        return scores
