"""The Hugging Face side of the equality tests: DACSession + forced text, with log-probs."""

from __future__ import annotations

import torch
from transformers import LogitsProcessorList

from dac.engines.hf.session import DACSession

BLOCK = 32  # vLLM KV block size = DAC block size (the CPU kernel needs a multiple of 32)
MAX_BATCHED = 256  # prompts longer than this are prefilled in chunks


class _Force:
    def __init__(self, script: list[int], width: int):
        self.script, self.width = script, width

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.width
        if step < len(self.script):
            scores = scores.clone()  # the raw logits kept by output_logits must stay intact
            scores[0] = float("-inf")
            scores[0, self.script[step]] = 0.0
        return scores


def hf_run(model, tok, layout, script: list[int], max_new: int, policy=None, cfg=None):
    """Greedy ids, the log-prob of each, and the DAC trace (None without a policy)."""
    ids = torch.tensor([layout.input_ids])
    kwargs = dict(max_new_tokens=max_new, do_sample=False, pad_token_id=0,
                  logits_processor=LogitsProcessorList([_Force(script, ids.shape[1])]),
                  output_logits=True, return_dict_in_generate=True)
    session = DACSession(model, tok, [layout], policy, cfg) if policy is not None else None
    with torch.inference_mode():
        if session is not None:
            with session:
                out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
        else:
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
    new = out.sequences[0, ids.shape[1]:].tolist()
    logps = [torch.log_softmax(lg[0].float(), -1)[t].item() for lg, t in zip(out.logits, new)]
    trace = None
    if session is not None:
        session.finish([new])
        trace = session.traces[0]
    return new, logps, trace
