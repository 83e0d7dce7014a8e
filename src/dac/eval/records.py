"""Per-sample records: what one generation did, scored and measured (one JSON line each).

Definitions (also in docs/evaluation.md):

* **score**: the task's RULER-style scorer on the answer (directives removed).
* **attention cost**: KV tokens read over all decode steps / KV tokens a full-attention decode
  of the same steps would read (``GenerationResult.fraction``; per cell: ratio of sums).
* **evidence recall**: share of the sample's evidence tokens inside the kept KV blocks, averaged
  over the *answer steps*: the decode steps from the one that processes the token completing
  the first well-formed directive onwards (that step already reads under the directive); all
  decode steps when the output declares no well-formed directive. For per-head policies
  (Quest, oracle) a step's recall is itself averaged over layers and KV heads.
* **adherence**: the output declares at least one directive and every directive-like text in
  it is well-formed (no unknown mode, bad or unknown region, or unclosed ``[[``).
* **mode match**: the last well-formed declaration has the task's ideal mode. Most outputs
  declare once; a lead-in answer (``[[local]] lead [[global]][[focus S3]] value``) declares
  local first and writes its value under the last one, so ``first_mode`` and ``final_mode``
  are both recorded. (A malformed declaration after it falls back to global; adherence
  counts that.)
* **exact declaration** (the model card's rates; "declaration" is any directive-like text,
  well-formed or not): ``first_exact``, the first declaration is well-formed and is the
  sample's ideal one; ``final_exact``, the last one is; ``focus_union_exact``, the sections of
  all well-formed focuses together are the ideal ones (a stepwise answer focuses each step's
  section in turn; ``False`` when the ideal is not a focus); ``first_covers``, the first
  declaration is a well-formed focus whose sections include the ideal ones (``None`` unless
  the ideal is a focus and the first declaration is a well-formed focus).
* **format failure**: under a protocol that asks for ``<answer>...</answer>`` (da, vanilla),
  a response without it; it scores 0, as in the paper, whatever the text holds.
* **bound_sections**: the answer was decoded with the section bound
  (:mod:`dac.protocol.constraint`), which applies to policies that read directives only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..protocol.context import PromptLayout, Span
from ..protocol.grammar import Directive, Mode, ProtocolEvent
from ..tasks import Sample, score
from .items import format_failure

if TYPE_CHECKING:  # the report reads records without loading torch
    from ..runtime import GenerationResult

SCHEMA = "dac.eval.record/1"


def answer_from(result: GenerationResult) -> int:
    """The first answer step: the step of the first well-formed directive, else 0."""
    for e in result.events:
        if e.ok:
            return e.step
    return 0


def evidence_recall(result: GenerationResult) -> float | None:
    """Mean evidence recall over the answer steps (see the module docstring)."""
    start = answer_from(result)
    steps = [s for s in result.steps if s.recall is not None]
    chosen = [s for s in steps if s.step >= start] or steps
    if not chosen:
        return None
    return sum(s.recall for s in chosen) / len(chosen)


def final_directive(result: GenerationResult) -> Directive | None:
    """The last well-formed declaration (in a lead-in answer, the focus its value is written
    under), else None."""
    return next((e.applied for e in reversed(result.events) if e.ok), None)


def adherent(result: GenerationResult) -> bool:
    return bool(result.events) and all(e.ok for e in result.events)


def directive_match(ideal: Directive, events: Sequence[ProtocolEvent]) -> dict[str, Any]:
    """``first_exact``, ``final_exact``, ``focus_union_exact`` and ``first_covers`` of an
    output's declarations against the sample's ideal directive (see the module docstring):
    the model card judges a lead-in answer by its last declaration and a stepwise one by
    the union of its focuses, so all are recorded."""
    first = events[0] if events else None
    last = events[-1] if events else None
    covers = None
    if (first is not None and first.ok and ideal.mode is Mode.FOCUS
            and first.applied is not None and first.applied.mode is Mode.FOCUS):
        covers = set(ideal.sections()) <= set(first.applied.sections())
    union = {k for e in events if e.ok and e.applied is not None
             and e.applied.mode is Mode.FOCUS for k in e.applied.sections()}
    return {"first_exact": first is not None and first.ok and first.applied == ideal,
            "final_exact": last is not None and last.ok and last.applied == ideal,
            "focus_union_exact": ideal.mode is Mode.FOCUS and union == set(ideal.sections()),
            "first_covers": covers}


def compress_blocks(blocks: list[list[int]]) -> list[list[Any]]:
    """Per-step kept blocks as runs: ``[[first_step, last_step, [[b0, b1), ...]], ...]``."""
    out: list[list[Any]] = []
    prev = None
    for i, kept in enumerate(blocks):
        ranges: list[list[int]] = []
        for b in kept:
            if ranges and ranges[-1][1] == b:
                ranges[-1][1] = b + 1
            else:
                ranges.append([b, b + 1])
        if ranges == prev:
            out[-1][1] = i
        else:
            out.append([i, i, ranges])
            prev = ranges
    return out


def expand_blocks(runs: list[list[Any]]) -> list[list[int]]:
    """Inverse of :func:`compress_blocks`."""
    steps: list[list[int]] = []
    for first, last, ranges in runs:
        kept = [b for a, z in ranges for b in range(a, z)]
        steps.extend([list(kept) for _ in range(first, last + 1)])
    return steps


def make_record(sample: Sample, layout: PromptLayout, evidence: list[Span],
                result: GenerationResult, policy: str, block_size: int,
                wall_s: float, *, bound_sections: bool | None = None,
                engine: str | None = None, arm: str | None = None) -> dict[str, Any]:
    """One sample's record (module docstring). ``bound_sections``: whether this answer was
    decoded with the section bound (``None``: not known to the caller); ``engine``: the
    engine's name, so records merged from several runs still say where they were measured;
    ``arm``: the arm label (:mod:`dac.eval.arms`) the record's cell runs, else the policy."""
    first = next((e.applied for e in result.events if e.ok), None)
    final = final_directive(result)
    protocol = getattr(layout, "protocol", "brackets")
    ideal = sample.directive  # None for a paper source's example: no ideal is known
    scorer = getattr(sample, "score_answer", None)
    failed = format_failure(result.text, protocol)
    if failed:  # the paper's rule: a response that never commits to an answer is wrong
        value = 0.0
    elif scorer is not None:
        value = scorer(result.answer, result.text, protocol)
    else:
        value = score(sample.task, result.answer, sample)
    if ideal is not None:
        matches = {"mode_match": (final.mode == ideal.mode) if final else False,
                   **directive_match(ideal, result.events)}
    else:
        matches = dict.fromkeys(("mode_match", "first_exact", "final_exact",
                                 "focus_union_exact", "first_covers"))
    extra = sample.extra_fields(result.text, protocol) if hasattr(sample, "extra_fields") else {}
    return {
        "schema": SCHEMA,
        "id": sample.id,
        "task": sample.task,
        "family": sample.family,
        "length": sample.length,
        "seed": sample.seed,
        "policy": policy,
        "arm": arm or policy,
        "prompt_tokens": layout.prompt_len,
        "num_sections": layout.num_sections,
        "answers": sample.answers,
        "ideal_directive": ideal.render() if ideal is not None else None,
        "output": result.text,
        "answer": result.answer,
        "score": value,
        "directives": result.timeline(),
        "adherent": adherent(result),
        "first_mode": first.mode.value if first else None,
        "final_mode": final.mode.value if final else None,
        **matches,
        "bound_sections": bound_sections,
        "engine": engine,
        "kv": {"read": round(result.kv_read, 3), "full": result.kv_full,
               "fraction": round(result.fraction, 6),
               "per_step": [round(s.read, 2) for s in result.steps],
               "recall_per_step": [None if s.recall is None else round(s.recall, 4)
                                   for s in result.steps]},
        "answer_from_step": answer_from(result),
        "evidence_recall": evidence_recall(result),
        "evidence_tokens": [[s.start, s.end] for s in evidence],
        "sections": [[s.start, s.end] for s in layout.sections],
        "block_size": block_size,
        "blocks": compress_blocks(result.blocks) if result.blocks else None,
        "generated_tokens": len(result.generated_ids),
        "wall_s": round(wall_s, 4),
        "policy_report": result.policy_report or None,  # e.g. whether "+safety" fired
        "protocol": protocol,
        "stats": result.stats(),  # attended tokens, decode steps, modes, focus, termination
        # per-head policies: per step, the share of layers x KV heads that read each block
        "block_share": [{str(b): v for b, v in sh.items()} for sh in result.block_share]
        or None,
        "format_failure": failed,
        **extra,
    }
