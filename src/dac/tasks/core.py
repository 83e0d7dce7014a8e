"""Samples, task specs and sizing: a generator's draft becomes a sample of a given token length.

A generator is a function ``(rng, n, length) -> Draft`` where ``n`` is a size knob (haystack
words, distractor count, ...) that grows the prompt roughly monotonically. :func:`realize`
searches ``n`` so that the *rendered prompt* (``build_prompt`` with the evaluated model's
tokenizer) is as close as possible to the requested length, then groups the draft's units
into numbered sections and records where the evidence lies.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..protocol.context import PromptLayout, Span, build_prompt
from ..protocol.grammar import Directive, Mode

FAMILIES = ("retrieval", "reworded", "multi", "aggregation", "local")
#: Sections are about this many prompt tokens (at least 4, at most 128 sections per prompt).
SECTION_TOKENS = 512
MIN_SECTIONS, MAX_SECTIONS = 4, 128
#: A sample's prompt is within this relative distance of the requested length.
LENGTH_TOLERANCE = 0.05


@dataclass(frozen=True)
class Sample:
    """One evaluation item. A pure function of (task, length, seed, tokenizer)."""

    task: str
    length: int  # requested prompt length in tokens
    seed: int
    sections: list[str]  # the context, split into sections (for build_prompt)
    question: str
    answers: list[str]  # reference strings
    evidence: list[tuple[int, int, int]]  # (1-based section, char_start, char_end) in its text
    directive: Directive  # the declaration an ideal model writes first
    target: str  # the ideal full answer: directive.render() + " " + answer text
    family: str  # "retrieval" | "multi" | "aggregation" | "local"
    prompt_tokens: int = 0  # measured length of build_prompt(tokenizer, sections, question)
    #: RULER's answer prefix, written by the model: the evidence's words right before the value
    #: ("The pass key is "), so the value follows the same words as in the document ("" = none)
    lead: str = ""
    #: a multi-region answer as steps, each read from one section: ``(section, text)`` in
    #: answer order: the values (niah_multivalue, niah_multiquery), the names down the chain
    #: (variable_tracking), the chain's keys then its value (chained_facts), the holder then
    #: the room (world_state); empty for the other families
    hops: tuple[tuple[int, str], ...] = ()
    #: the last hop can be found by a backward scan (:func:`dac.train.targets.stepwise_target`)
    scan_last: bool = False
    #: per hop, words written before its focus is chosen ("" = none): the question's words
    #: the first hop's evidence holds (world_state's object, variable_tracking's value), the
    #: words before a later hop's answer in its sentence (world_state: "Mary went to "), so
    #: the step that reads everything chooses the section by a match on words just written
    #: (:func:`dac.train.targets.stepwise_target` with ``keys``)
    hop_keys: tuple[str, ...] = ()

    @property
    def answer_text(self) -> str:
        return self.target[len(self.directive.render()):].strip()

    @property
    def id(self) -> str:
        return f"{self.task}-{self.length}-{self.seed}"

    def layout(self, tokenizer: Any, **kwargs: Any) -> PromptLayout:
        return build_prompt(tokenizer, self.sections, self.question, **kwargs)

    def evidence_texts(self) -> list[str]:
        return [self.sections[s - 1][a:b] for s, a, b in self.evidence]

    def evidence_spans(self, layout: PromptLayout) -> list[Span]:
        """Token spans of the evidence in ``layout`` (built from this sample's sections)."""
        return [layout.section_char_span_to_tokens(s, a, b) for s, a, b in self.evidence]

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "length": self.length, "seed": self.seed,
                "family": self.family, "question": self.question, "answers": self.answers,
                "evidence": [list(e) for e in self.evidence],
                "directive": self.directive.render(), "target": self.target,
                "prompt_tokens": self.prompt_tokens, "num_sections": len(self.sections)}


@dataclass
class Draft:
    """What a generator returns: atomic text units plus the question and its evidence.

    ``evidence`` holds ``(unit index, char_start, char_end)`` inside that unit's text. Units are
    joined with ``joiner`` inside a section and never split between sections.
    """

    units: list[str]
    evidence: list[tuple[int, int, int]]
    question: str
    answers: list[str]
    answer_text: str
    joiner: str = " "
    tail: int = 0  # the last ``tail`` units form the last section on their own (local tasks)
    lead: str = ""  # :attr:`Sample.lead`
    #: the answer as steps, each read from one evidence span: ``(index into evidence, text
    #: written)`` in answer order (:attr:`Sample.hops`); empty when not a stepwise answer
    hops: list[tuple[int, str]] = field(default_factory=list)
    #: the last hop is the latest of several matching sentences (world_state: the holder's
    #: last move), which a backward scan finds (:func:`dac.train.targets.stepwise_target`)
    scan_last: bool = False
    #: :attr:`Sample.hop_keys`, aligned with ``hops`` (empty: none)
    hop_keys: list[str] = field(default_factory=list)


Generator = Callable[[random.Random, int, int], Draft]
Scorer = Callable[[str, list[str]], float]


@dataclass(frozen=True)
class TaskSpec:
    name: str
    family: str
    generate: Generator = field(repr=False)
    scorer: Scorer = field(repr=False)
    max_new_tokens: int
    description: str
    size_unit: str = "words"  # what the size knob ``n`` counts (documentation)


def insert_at_depths(filler: list[str], items: list[str], depths: list[float]
                     ) -> tuple[list[str], list[int]]:
    """Insert ``items`` into ``filler`` at relative depths; returns units and the item indices."""
    order = sorted(range(len(items)), key=lambda i: (depths[i], i))
    units = list(filler)
    pos = [0] * len(items)
    shift = 0
    placed = []
    for i in order:
        placed.append((min(len(filler), int(depths[i] * len(filler) + 0.5)), i))
    for at, i in placed:
        units.insert(at + shift, items[i])
        pos[i] = at + shift
        shift += 1
    return units, pos


def whole(unit_idx: int, units: list[str]) -> tuple[int, int, int]:
    """Evidence covering a whole unit."""
    return (unit_idx, 0, len(units[unit_idx]))


def num_sections(length: int) -> int:
    return max(MIN_SECTIONS, min(MAX_SECTIONS, round(length / SECTION_TOKENS)))


def group(units: list[str], k: int, joiner: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Split units into ``k`` sections of about equal characters; per unit (section, offset)."""
    k = max(1, min(k, len(units)))
    total = sum(len(u) + len(joiner) for u in units)
    where: list[tuple[int, int]] = []
    sections: list[list[str]] = [[]]
    lens = [0]
    acc = 0
    for i, u in enumerate(units):
        left_units = len(units) - i
        left_secs = k - len(sections)
        # start a new section when past this section's share, or when units would run short
        if sections[-1] and left_secs > 0 and (acc >= total * len(sections) / k
                                                or left_units <= left_secs):
            sections.append([])
            lens.append(0)
        off = lens[-1] + (len(joiner) if sections[-1] else 0)
        where.append((len(sections), off))
        sections[-1].append(u)
        lens[-1] = off + len(u)
        acc += len(u) + len(joiner)
    return [joiner.join(s) for s in sections], where


def directive_for(family: str, sections: list[int]) -> Directive:
    if family == "aggregation":
        return Directive(Mode.GLOBAL)
    if family == "local":
        return Directive(Mode.LOCAL)
    secs = sorted(set(sections))
    regions: list[tuple[int, int]] = []
    for s in secs:
        if regions and regions[-1][1] == s - 1:
            regions[-1] = (regions[-1][0], s)
        else:
            regions.append((s, s))
    return Directive(Mode.FOCUS, tuple(regions))


def assemble(spec: TaskSpec, draft: Draft, length: int, seed: int,
             sections: int | None = None) -> Sample:
    k = num_sections(length) if sections is None else sections
    if 0 < draft.tail < len(draft.units):
        k = max(k, 2)  # the tail is a section of its own, after at least one other
        head = draft.units[:-draft.tail]
        sections, where = group(head, k - 1, draft.joiner)
        sections.append(draft.joiner.join(draft.units[-draft.tail:]))
        off = 0
        for u in draft.units[-draft.tail:]:
            where.append((len(sections), off))
            off += len(u) + len(draft.joiner)
    else:
        sections, where = group(draft.units, k, draft.joiner)
    evidence = []
    for u, a, b in draft.evidence:
        sec, off = where[u]
        evidence.append((sec, off + a, off + b))
    hops = tuple((evidence[i][0], text) for i, text in draft.hops)
    evidence.sort()
    directive = directive_for(spec.family, [s for s, _, _ in evidence])
    return Sample(task=spec.name, length=length, seed=seed, sections=sections,
                  question=draft.question, answers=list(draft.answers), evidence=evidence,
                  directive=directive, target=f"{directive.render()} {draft.answer_text}",
                  family=spec.family, lead=draft.lead, hops=hops,
                  scan_last=draft.scan_last, hop_keys=tuple(draft.hop_keys))


def realize(spec: TaskSpec, tokenizer: Any, length: int, seed: int,
            sections: int | None = None) -> Sample:
    """Search the size knob so the rendered prompt is closest to ``length`` tokens.
    ``sections``: cut the context into this many sections (default :func:`num_sections`)."""
    if length < 64:
        raise ValueError(f"length must be at least 64 tokens, got {length}")
    if sections is not None and not 1 <= sections <= MAX_SECTIONS:
        raise ValueError(f"sections must lie in [1, {MAX_SECTIONS}], got {sections}")
    cache: dict[int, tuple[int, Sample]] = {}

    def measure(n: int) -> int:
        if n not in cache:
            rng = random.Random(f"{spec.name}|{seed}")
            s = assemble(spec, spec.generate(rng, n, length), length, seed, sections)
            cache[n] = (build_prompt(tokenizer, s.sections, s.question).prompt_len, s)
        return cache[n][0]

    base = measure(0)
    if base > length * (1 + LENGTH_TOLERANCE):
        raise ValueError(f"task {spec.name!r} needs at least {base} prompt tokens with this "
                         f"tokenizer; {length} was requested")
    # bracket: lo fits (<= length), hi overshoots
    lo, hi = 0, 0
    probe = 64
    while True:
        t = measure(probe)
        if t > length:
            hi = probe
            break
        lo = probe
        # extrapolate from the growth so far, but at most 16x (a coarse knob may not have
        # moved the prompt yet)
        rate = (t - base) / probe
        guess = int(probe + (length - t) / rate * 1.1) + 1 if rate > 0 else probe * 16
        probe = max(probe * 2, min(probe * 16, guess))
        if probe > 4 * length + 4096:  # every knob unit adds at least about half a token
            raise RuntimeError(f"task {spec.name!r} cannot grow to {length} tokens")
    it = 0
    while hi - lo > 1:
        # interpolate (bisect every other step so a skewed bracket still halves)
        tl, th = measure(lo), measure(hi)
        guess = lo + int((length - tl) / max(th - tl, 1) * (hi - lo))
        mid = (lo + hi) // 2 if it % 2 else min(hi - 1, max(lo + 1, guess))
        it += 1
        if abs(measure(mid) - length) <= length * 0.005:
            lo = mid
            break
        if measure(mid) <= length:
            lo = mid
        else:
            hi = mid
    best = min((n for n in (lo, hi) if n in cache), key=lambda n: abs(cache[n][0] - length))
    tokens, sample = cache[best]
    return dataclasses.replace(sample, prompt_tokens=tokens)
