"""Training examples from the suite's task generators, with their answer masks.

Sequence = prompt (``build_prompt``: the same template as inference) + ``sample.target``
(the ideal directive, a space, the answer; :func:`~dac.train.targets.led_target` under
``answer_leads``, or another format of :mod:`dac.train.targets`) + EOS.
The loss covers the target tokens only; the target tokens from the first declaration's close
on are trained under the mask of the declaration in force (:func:`schedule_mask`).
Every example is a pure function of (config, global index): seeds are ``seed_base + index``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..planning.blocks import PlanConfig
from ..protocol.context import build_prompt
from ..protocol.grammar import CLOSE, OPEN, Directive, Mode
from ..protocol.prompt import section_marker
from .config import COPY_FORMATS, Stage, TrainConfig
from .masking import AnswerMask, directive_schedule, schedule_mask
from .targets import LOCAL, hop_target, lead_in_target, led_target, stepwise_target

#: make_sample(task, tokenizer, length, seed[, sections=k]): ``sections`` only when a stage sets it
SampleFn = Callable[..., Any]


@dataclass
class Example:
    ids: list[int]
    prompt_len: int  # loss on positions prompt_len.. (the target)
    mask: AnswerMask
    task: str
    seed: int
    head: int = 0  # target tokens ``head_from .. head`` write the directive (weighted loss)
    head_from: int = 0
    #: more ``(from, to)`` target-token ranges weighted as directives (a stepwise answer's
    #: later focuses)
    more_heads: tuple[tuple[int, int], ...] = ()


def _offsets(tokenizer: Any, target: str) -> list[tuple[int, int]]:
    return tokenizer(target, add_special_tokens=False, return_offsets_mapping=True)[
        "offset_mapping"]


def _token_span(offsets: list[tuple[int, int]], start: int, end: int) -> tuple[int, int]:
    """(first, last) target token covering characters ``start:end``, ``(-1, -1)`` if none."""
    first = -1
    for i, (_, stop) in enumerate(offsets):
        if first < 0 and stop > max(start, 0):
            first = i
        if stop >= end:
            return first, i
    return -1, -1


def directive_span(tokenizer: Any, target: str, directive: str | None = None
                   ) -> tuple[int, int]:
    """(first, last) target token of ``directive``'s text in ``target`` (default: the first
    directive), ``(-1, -1)`` if absent."""
    if directive is not None:
        start = target.find(directive)
        end = start + len(directive) if start >= 0 else -1
    else:
        end = target.find(CLOSE)
        start = target.rfind(OPEN, 0, end) if end >= 0 else -1
        end = end + len(CLOSE) if end >= 0 else -1
    if end < 0:
        return -1, -1
    return _token_span(_offsets(tokenizer, target), start, end)


def focus_spans(tokenizer: Any, target: str) -> list[tuple[int, int]]:
    """(first, last) target tokens of every ``[[focus ...]]`` in ``target``, in order."""
    offsets = _offsets(tokenizer, target)
    return [_token_span(offsets, m.start(), m.end())
            for m in re.finditer(re.escape(OPEN) + r"focus[^\]]*" + re.escape(CLOSE), target)]


def directive_close(tokenizer: Any, target: str) -> int:
    """Index of the target token that completes the first directive (``-1`` if none)."""
    return directive_span(tokenizer, target)[1]


def make_example(sample: Any, tokenizer: Any, plan: PlanConfig, dense: bool, task: str = "",
                 seed: int = 0, lead: bool = False, question_first: bool = False,
                 lead_first: bool = False, lead_directive: str = "",
                 per_hop: bool = False, scan: bool = False, hop_keys: str = "") -> Example:
    """``lead``: the target is ``led_target(sample)`` (the answer restates the evidence's words
    before the value) instead of ``sample.target``; with ``lead_first`` too,
    ``lead_in_target(sample, lead_directive)`` (the lead before the directive, read under
    ``lead_directive`` if given). ``per_hop``: ``hop_target(sample)`` where the sample has one
    (one focus per step of a multi-region answer); with ``scan``, ``stepwise_target(sample,
    scan=True)`` (a last step that is the latest of several sentences found by a backward
    scan); with ``hop_keys``, ``stepwise_target(sample, keys=hop_keys,
    lead_directive=lead_directive)`` (keys written before the steps that choose a section);
    the formats are :mod:`dac.train.targets`'.
    ``question_first``: the prompt asks the
    question before the document too. Only the ideal directive's tokens are the example's
    weighted ``head`` (for a stepwise answer, every focus's)."""
    layout = build_prompt(tokenizer, sample.sections, sample.question,
                          question_first=question_first)
    per = None
    if per_hop:
        per = (stepwise_target(sample, scan=scan, keys=hop_keys,
                               lead_directive=lead_directive or LOCAL)
               if scan or hop_keys else hop_target(sample))
    text = (per if per is not None
            else lead_in_target(sample, lead_directive) if lead and lead_first
            else led_target(sample) if lead else sample.target)
    target = tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = list(layout.input_ids) + list(target) + [tokenizer.eos_token_id]
    more: tuple[tuple[int, int], ...] = ()
    if per is not None:  # every step's focus is a choice: all of them weighted
        spans = focus_spans(tokenizer, text)
        (first, close), more = spans[0], tuple((a, b + 1) for a, b in spans[1:])
    else:
        ideal = sample.directive.render() if sample.directive is not None else None
        first, close = directive_span(tokenizer, text,
                                      ideal if ideal and ideal in text else None)
    if dense:
        mask = AnswerMask(-1, [])
    else:  # rows follow every declaration of the target, read as decoding reads it
        mask = schedule_mask(directive_schedule(tokenizer, target, layout.num_sections),
                             layout, layout.prompt_len, len(ids) - 1, plan)
    return Example(ids, layout.prompt_len, mask, task, seed, close + 1, max(first, 0), more)


#: sections of a ``lookup`` copy sequence: up to the suite's most (one per 512 tokens, 16 at 8K)
LOOKUP_SECTIONS = 16


def copy_ids(tokenizer: Any, length: int, seed: int,
             formats: Sequence[str] = COPY_FORMATS) -> list[int]:
    """A synthetic copying sequence of about ``length`` tokens (BOS first), pure in ``seed``.

    One of ``formats``, equally likely: ``repeat``, a random span of ``length // 4`` to
    ``length // 2`` tokens (at least 8) repeated verbatim until the sequence is full (the
    strongest copying signal: everything after the first copy is predictable; the copy distance
    varies, so only matching by content predicts it, not a fixed offset); ``spans``, random
    spans of 8 to ``min(64, length // 4)`` tokens where about half of the spans repeat an
    earlier one; and ``table``, ``key : value`` lines (random 2-token keys, 3-7 digit values)
    followed by lookups of random keys. ``lookup`` (only when named) is a table cut into
    2-``LOOKUP_SECTIONS`` marked sections (``[S1]`` ... as in prompts), then lines ``key ->
    [[focus Sk]] value``: naming the section that holds a key is the directive's job on the
    keyed retrieval tasks, here with a target on every line (research/training-log.md, "Eighth run").
    Random spans draw every ordinary token (bytes, digits and BPE merges; not the special
    tokens nor the newline, which only the tables use), a fifth of their items being numbers
    of 3-8 digits: copying must cover what the tasks copy, and a model whose copy data left out
    the digits copied words but not numbers (research/training-log.md, "Seventh run"). Only repeated spans
    and looked-up values are predictable, and only by copying from earlier in the context: a
    next-token loss over these sequences is what forms induction (copying) heads. The copies
    lie at most ``length`` tokens back, so short copy stages put them close: induction forms
    there in far fewer steps (research/training-log.md, "Sixth run").
    """
    rng = random.Random(seed * 0x9E3779B1 % (1 << 61))
    specials = [i for i in tokenizer.all_special_ids if i < tokenizer.vocab_size // 2]
    lo, hi = max(specials, default=-1) + 1, tokenizer.vocab_size
    enc = lambda t: tokenizer(t, add_special_tokens=False)["input_ids"]  # noqa: E731

    def number(digits: int) -> list[int]:
        return enc(" " + str(rng.randrange(10 ** (digits - 1), 10 ** digits)))

    newline = set(enc("\n"))  # kept for the table's lines: formats stay tellable apart

    def token() -> int:
        while (t := rng.randrange(lo, hi)) in newline:
            pass
        return t

    def rand(n: int) -> list[int]:
        out: list[int] = []
        while len(out) < n:
            out += number(rng.randint(3, 8)) if rng.random() < 0.2 else [token()]
        return out[:n]

    ids = [tokenizer.bos_token_id]
    kind = formats[min(len(formats) - 1, int(rng.random() * len(formats)))]
    if kind == "repeat":
        span = rand(rng.randint(max(8, length // 4), max(8, length // 2)))
        while len(ids) < length:
            ids += span
    elif kind == "spans":
        spans: list[list[int]] = []
        while len(ids) < length:
            if spans and rng.random() < 0.5:
                span = rng.choice(spans)
            else:
                span = rand(rng.randint(8, max(8, min(64, length // 4))))
                spans.append(span)
            ids += span
    elif kind == "lookup":
        sep, arrow, nl = enc(" :"), enc(" ->"), enc("\n")
        entries: list[tuple[list[int], list[int], int]] = []
        k = rng.randint(2, LOOKUP_SECTIONS)
        table_end = length * rng.uniform(0.5, 0.7)
        per = max(1.0, (table_end - 1) / k)
        for sec in range(1, k + 1):
            ids += enc(section_marker(sec) + " ")
            while True:  # at least one line a section
                key, value = rand(2), number(rng.randint(3, 7))
                entries.append((key, value, sec))
                ids += key + sep + value + nl
                if len(ids) >= 1 + per * sec:
                    break
        while len(ids) < length:
            key, value, sec = rng.choice(entries)
            focus = enc(" " + Directive(Mode.FOCUS, ((sec, sec),)).render())
            ids += key + arrow + focus + value + nl
    else:
        sep, nl = enc(" :"), enc("\n")
        pairs: list[tuple[list[int], list[int]]] = []
        table_end = length * rng.uniform(0.5, 0.8)
        while len(ids) < table_end:
            key = rand(2)
            value = number(rng.randint(3, 7))
            pairs.append((key, value))
            ids += key + sep + value + nl
        while len(ids) < length:
            key, value = rng.choice(pairs)
            ids += key + sep + value + nl
    return ids[:length]


def copy_example(tokenizer: Any, length: int, seed: int,
                 formats: Sequence[str] = COPY_FORMATS) -> Example:
    """:func:`copy_ids` as an example whose loss is all "prompt" (next-token, full causal)."""
    ids = copy_ids(tokenizer, length, seed, formats)
    return Example(ids, len(ids), AnswerMask(-1, []), "copy", seed)


def pick(cfg: TrainConfig, tasks: list[str], stage: Stage, index: int) -> tuple[str, int, int, bool]:
    """(task, length, seed, dense) of training example ``index`` (global, across stages)."""
    seed = cfg.seed_base + index
    rng = random.Random(seed * 2654435761 % (1 << 61))
    mix = stage.tasks if stage.tasks is not None else cfg.tasks
    weights = [mix.get(t, 0.0 if stage.tasks is not None else 1.0) if mix else 1.0
               for t in tasks]
    task = rng.choices(tasks, weights)[0]
    length = rng.randint(stage.lo, stage.length)
    dense = rng.random() < cfg.dense_answer_fraction
    return task, length, seed, dense


class StageData(torch.utils.data.Dataset):
    """Examples ``offset .. offset + steps * batch`` of one stage (index -> example)."""

    def __init__(self, cfg: TrainConfig, stage: Stage, tokenizer: Any, tasks: list[str],
                 offset: int, batch: int, width: int, sample_fn: SampleFn):
        self.cfg, self.stage, self.tok, self.tasks = cfg, stage, tokenizer, tasks
        self.offset, self.batch, self.width, self.sample_fn = offset, batch, width, sample_fn

    def __len__(self) -> int:
        return self.stage.steps * self.batch

    def __getitem__(self, i: int) -> Example | None:
        task, length, seed, dense = pick(self.cfg, self.tasks, self.stage, self.offset + i)
        if self.stage.kind == "copy" or (self.stage.copy_fraction and random.Random(
                seed ^ 0x5DEECE66D).random() < self.stage.copy_fraction):
            return copy_example(self.tok, min(length, self.width), seed,
                                self.stage.copy_formats or COPY_FORMATS)
        extra = {}
        if self.stage.sections:
            lo, hi = self.stage.sections
            draw = random.Random(seed ^ 0x2545F491)
            k = draw.randint(lo, hi)  # drawn first: a fraction of 1 keeps the recorded runs' k
            if self.stage.sections_fraction >= 1.0 or draw.random() < self.stage.sections_fraction:
                extra["sections"] = k
        for _ in range(6):
            try:
                sample = self.sample_fn(task, self.tok, length, seed, **extra)
            except ValueError:  # the task's minimum prompt is longer: ask for more
                length = int(length * 1.2) + 32
                continue
            ex = make_example(sample, self.tok, self.cfg.plan, dense, task, seed,
                              self.cfg.answer_leads, self.cfg.question_first,
                              self.stage.lead_first, self.stage.lead_directive,
                              self.stage.per_hop, self.stage.scan, self.stage.hop_keys)
            if len(ex.ids) <= self.width:
                return ex
            length = max(64, int(length * 0.85))  # overflowed the stage width: shorter
        return None


@dataclass
class Batch:
    ids: torch.Tensor  # [B, W]
    targets: torch.Tensor  # [B, W]: next-token labels, -100 where no loss
    prompt_targets: torch.Tensor  # [B, W]: next-token labels inside the prompt, -100 elsewhere
    directive: torch.Tensor  # [B, W] bool: label positions whose label is a directive token
    masks: list[AnswerMask]
    tasks: list[str]
    dropped: int


def collate(examples: list[Example | None], width: int, pad_id: int) -> Batch:
    kept = [e for e in examples if e is not None]
    dropped = len(examples) - len(kept)
    while len(kept) < len(examples):  # keep the batch shape static (compiled kernels)
        kept.append(kept[len(kept) % max(1, len(kept))] if kept else None)  # type: ignore[arg-type]
    if kept[0] is None:
        raise RuntimeError("every example of a batch overflowed the stage width")
    ids = torch.full((len(kept), width), pad_id, dtype=torch.long)
    targets = torch.full((len(kept), width), -100, dtype=torch.long)
    prompt_targets = torch.full((len(kept), width), -100, dtype=torch.long)
    directive = torch.zeros((len(kept), width), dtype=torch.bool)
    for b, e in enumerate(kept):
        n = len(e.ids)
        ids[b, :n] = torch.tensor(e.ids)
        prompt_targets[b, : e.prompt_len - 1] = torch.tensor(e.ids[1: e.prompt_len])
        # position p predicts token p + 1; the loss covers the target (and EOS)
        targets[b, e.prompt_len - 1: n - 1] = torch.tensor(e.ids[e.prompt_len:])
        for a, z in ((e.head_from, e.head), *e.more_heads):
            directive[b, e.prompt_len - 1 + a: e.prompt_len - 1 + z] = True
    return Batch(ids, targets, prompt_targets, directive, [e.mask for e in kept],
                 [e.task for e in kept], dropped)
