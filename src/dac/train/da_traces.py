"""DA traces: a suite sample written out in the paper's protocol, for tuning a chat model.

A trace is the DA prompt (:class:`~dac.protocol.da.DAProtocol`: the sample's sections as
magic chunks in the model's own chat template) and the response an ideal model writes:

    <focus magic_chunks="K">VALUE</focus>...<local><answer>ANSWER</answer></local>

one focus per value to copy (a retrieval sample has one, a multi-hop sample one per hop, in
answer order), then the answer inside a closing local block. Every part is a habit the
protocol's instruction asks for: focus to copy a value word for word, close with a local
block that states the answer. The response starts in global mode, so choosing chunk K reads
the whole context; the copy reads chunk K alone; the answer reads no chunk. Writing the
answer inside ``<local>`` keeps its steps off the document, which is where the attended
tokens are saved.

Each trace carries the attention it is trained under: the rows after a declaration see
exactly what the planner keeps at inference (:func:`dac.train.masking.schedule_mask`, fed by
the same DA parser that reads generated text).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..planning.blocks import PlanConfig
from ..protocol.base import get_protocol
from ..protocol.grammar import Mode
from ..runtime.eos import eos_token_ids
from ..tasks import Sample
from .masking import AnswerMask, directive_schedule, schedule_mask


def _chunks(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"{lo}-{hi}"


def da_response(sample: Sample) -> str:
    """The ideal DA response to ``sample`` (a retrieval or multi-hop sample)."""
    if sample.directive.mode is not Mode.FOCUS:
        raise ValueError(f"{sample.task}: DA traces are built for focus tasks only "
                         f"(retrieval and multi-hop), not {sample.directive.mode.value}")
    if sample.hops:
        steps = [(_chunks(k, k), text) for k, text in sample.hops]
    else:
        where = ",".join(_chunks(lo, hi) for lo, hi in sample.directive.regions)
        steps = [(where, sample.answer_text)]
    focus = "".join(f'<focus magic_chunks="{k}">{text}</focus>' for k, text in steps)
    return f"{focus}<local><answer>{sample.answer_text}</answer></local>"


@dataclass
class Trace:
    """One training example: ``input_ids`` (prompt, then response and end of turn), the
    response's first position, and the answer rows' attention."""

    input_ids: list[int]
    response_start: int
    mask: AnswerMask
    task: str

    @property
    def response_len(self) -> int:
        return len(self.input_ids) - self.response_start


def end_of_turn(tokenizer: Any) -> int:
    """The token that ends the assistant's turn: the special token the chat template writes
    right after an assistant message (``<|im_end|>`` for Qwen), else the tokenizer's EOS.

    The template, not ``eos_token``, decides: a GGUF conversion may name ``<|endoftext|>``
    as EOS while the chat closes each turn with ``<|im_end|>``, and a model taught the
    former keeps writing after the turn wherever only the latter stops generation."""
    if getattr(tokenizer, "chat_template", None):
        mark = "\u2063END\u2063"
        try:
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": "x"}, {"role": "assistant", "content": mark}],
                tokenize=False)
        except Exception:  # a template that cannot render a finished turn: fall back
            text = ""
        if mark in text:
            tail = tokenizer(text[text.index(mark) + len(mark):],
                             add_special_tokens=False)["input_ids"]
            special = set(tokenizer.all_special_ids) | {
                i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
            for t in tail:
                if t in special:
                    return int(t)
    if tokenizer.eos_token_id is not None:
        return int(tokenizer.eos_token_id)
    ids = eos_token_ids(tokenizer)
    if not ids:
        raise ValueError("the tokenizer declares no end-of-sequence token")
    return min(ids)


def make_trace(sample: Sample, tokenizer: Any, plan: PlanConfig | None = None) -> Trace:
    """``sample`` as a DA trace for ``tokenizer``'s model (see the module docstring)."""
    proto = get_protocol("da")
    layout = proto.build_prompt(tokenizer, list(sample.sections), sample.question)
    response = tokenizer(da_response(sample), add_special_tokens=False)["input_ids"]
    response = list(response) + [end_of_turn(tokenizer)]
    ids = list(layout.input_ids) + response
    cfg = proto.plan_config(plan or PlanConfig())
    schedule = directive_schedule(tokenizer, response, layout.num_sections,
                                  parser=proto.parser(layout))
    mask = schedule_mask(schedule, layout, len(layout.input_ids), len(ids), cfg)
    return Trace(ids, len(layout.input_ids), mask, sample.task)
