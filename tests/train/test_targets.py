"""Training answer formats: each one's text, what it reads and that it scores like the target."""

from __future__ import annotations

import dataclasses
import re

import pytest

from dac.protocol.grammar import Directive, Mode, parse_directive
from dac.tasks import TASKS, make_sample, score
from dac.tasks.core import Sample
from dac.train.targets import (
    SCAN_MISS, hop_target, lead_first_target, lead_in_target, led_target, stepwise_target)

ALL = sorted(TASKS)
LENGTHS = (1024, 3000)


@pytest.fixture(scope="module")
def samples(tokenizer):
    return {(t, n, s): make_sample(t, tokenizer, n, s)
            for t in ALL for n in LENGTHS for s in (0, 1)}


LED = sorted(t for t in ALL if TASKS[t].family == "retrieval")


@pytest.mark.parametrize("task", LED)
def test_lead_restates_the_words_before_the_value(task, samples):
    """``led_target``: directive, the lead, the value. The lead's end followed by the value
    occurs verbatim in the evidence, so the value follows the same words as in the document
    (an induction head copies it), and the led answer scores like the plain one."""
    for length in LENGTHS:
        for seed in (0, 1):
            s = samples[(task, length, seed)]
            assert s.lead and led_target(s) == f"{s.directive.render()} {s.lead}{s.answer_text}"
            tail = s.lead.rsplit(" for ", 1)[-1]  # the key onwards (niah); all of it otherwise
            assert tail + s.answer_text in "\n".join(s.evidence_texts())
            key_words = tail.split(" is")[0].strip('": ')
            assert key_words.lower() in s.question.lower()  # the key asked, not another
            assert score(task, led_target(s), s) == 1.0
            # lead_first: the same lead, then the directive, then the value
            assert lead_first_target(s) == f"{s.lead}{s.directive.render()} {s.answer_text}"
            assert score(task, lead_first_target(s), s) == 1.0
            lead_in = lead_in_target(s, "[[local]]")
            assert lead_in == (f"[[local]] {s.lead}[[global]]{s.directive.render()} "
                               f"{s.answer_text}")
            assert score(task, lead_in, s) == 1.0


def test_tasks_without_a_lead_keep_their_target(samples):
    for task in ALL:
        s = samples[(task, 1024, 0)]
        if task not in LED:
            assert s.lead == "" and led_target(s) == s.target == lead_first_target(s)


def test_hop_targets_focus_each_step_on_the_section_it_reads(samples):
    """``hop_target``: every multi-region answer, one step at a time; each step is written
    under a focus on a section whose evidence holds its text, each later focus after one
    ``[[global]]`` step; together the focuses name the ideal directive's sections; the
    answer's values are the steps' (a chain's keys come before its value); it scores like the
    ideal answer. Other families have no steps."""
    for task in ALL:
        for length in LENGTHS:
            for seed in (0, 1):
                s = samples[(task, length, seed)]
                text = hop_target(s)
                if TASKS[task].family != "multi":
                    assert text is None and s.hops == (), task
                    continue
                parts = text.split(", ")
                assert len(parts) == len(s.hops) >= 2
                for i, part in enumerate(parts):
                    m = re.fullmatch(r"(\[\[global\]\])?\[\[focus S(\d+)\]\] (.+)", part)
                    assert m and bool(m.group(1)) == (i > 0)
                    k, step = int(m.group(2)), m.group(3)
                    assert (k, step) == s.hops[i]
                    assert any(sec == k and step in s.sections[k - 1][a:b]
                               for sec, a, b in s.evidence), (task, step)
                assert {k for k, _ in s.hops} == set(s.directive.sections())
                values = [step for _, step in s.hops]
                assert values[-len(s.answers):] == s.answers or values[-1] == s.answer_text
                assert score(task, text, s) == 1.0
    s = samples[("niah_multivalue", 1024, 0)]
    assert hop_target(dataclasses.replace(s, hops=())) is None


def test_a_scan_target_reads_sections_backwards_until_the_last_step(samples):
    """``stepwise_target(scan=True)``: world_state's room (the holder's last move) is found
    by reading the sections from the last one backwards, ``none`` for each section before
    it, one ``[[global]]`` before the scan's first step only; it scores like the ideal answer
    and never reads a section past the context. Tasks without ``scan_last`` are unchanged."""
    seen_misses = 0
    for length in LENGTHS:
        for seed in (0, 1):
            s = samples[("world_state", length, seed)]
            assert s.scan_last
            text = stepwise_target(s, scan=True)
            parts = text.split(", ")
            (k0, holder), (k_last, room) = s.hops
            assert parts[0] == f"[[focus S{k0}]] {holder}"
            n = len(s.sections)
            want = [(k, SCAN_MISS) for k in range(n, k_last, -1)] + [(k_last, room)]
            got = []
            for i, part in enumerate(parts[1:]):
                m = re.fullmatch(r"(\[\[global\]\])?\[\[focus S(\d+)\]\] (.+)", part)
                assert m and bool(m.group(1)) == (i == 0), part
                got.append((int(m.group(2)), m.group(3)))
            assert got == want
            assert all(not any(sec == k for sec, _, _ in s.evidence) for k, _ in got[:-1])
            assert score("world_state", text, s) == 1.0
            seen_misses += len(got) - 1
    assert seen_misses > 0  # some story's last move is before the last section
    for task in ALL:
        if task != "world_state":
            s = samples[(task, LENGTHS[0], 0)]
            assert not s.scan_last and stepwise_target(s, scan=True) == hop_target(s)


def test_keyed_stepwise_targets_write_the_words_the_next_section_is_found_by(samples):
    """``stepwise_target(keys=...)``: world_state's object and variable_tracking's value, read
    from the question under a local declaration, then one global step, before the first
    focus; with ``"all"``, world_state's ``Mary went to `` before the step choosing the last
    move. Each key is words of its hop's evidence sentence right before what is copied next;
    the keys hold no answer (they score 0 alone), the keyed target scores 1. Tasks without
    keys are unchanged."""
    for length in LENGTHS:
        for seed in (0, 1):
            for task in ("world_state", "variable_tracking"):
                s = samples[(task, length, seed)]
                key = s.hop_keys[0]
                assert key and key.strip() in s.question
                assert score(task, " ".join(s.hop_keys), s) == 0.0
                (k0, first), *_ = s.hops
                first_text = stepwise_target(s, keys="first")
                assert first_text == (f"[[local]] {key}[[global]]" + hop_target(s))
                assert any(sec == k0 and key.strip() in s.sections[k0 - 1][a:b]
                           for sec, a, b in s.evidence)
                assert score(task, first_text, s) == 1.0
                assert stepwise_target(s, keys="first", lead_directive="[[local 128]]") \
                    .startswith("[[local 128]] ")
            s = samples[("world_state", length, seed)]
            (k0, holder), (k1, room) = s.hops
            assert s.hop_keys[1] == f"{holder} went to "
            text = stepwise_target(s, keys="all")
            assert text.endswith(f", {holder} went to [[global]][[focus S{k1}]] {room}")
            assert f"{holder} went to {room}." in s.sections[k1 - 1]
            assert score("world_state", text, s) == 1.0
            scan = stepwise_target(s, scan=True, keys="all")  # the key before the scan's start
            assert f"{holder} went to [[global]][[focus S{len(s.sections)}]]" in scan
    for task in ALL:
        s = samples[(task, LENGTHS[0], 0)]
        if task not in ("world_state", "variable_tracking") and s.hops:
            assert not s.hop_keys and stepwise_target(s, keys="all") == hop_target(s)
    with pytest.raises(ValueError, match="keys must be"):
        stepwise_target(samples[("world_state", LENGTHS[0], 0)], keys="every")


def _hand_sample(**kw) -> Sample:
    d = Directive(Mode.FOCUS, ((2, 3), (6, 6)))
    base = dict(task="t", length=1024, seed=0, sections=[f"s{i}" for i in range(1, 9)],
                question="q", answers=["4821", "7730"], evidence=[(2, 0, 2), (6, 0, 2)],
                directive=d, target=f"{d.render()} 4821, 7730", family="multi")
    return Sample(**{**base, **kw})


def test_formats_of_a_hand_built_sample_are_pinned_to_the_byte():
    """The exact strings training data and the shipped model were made with: a lead, a
    multi-region directive, stepwise hops with keys and a backward scan."""
    s = _hand_sample(lead="the value is ")
    assert led_target(s) == "[[focus S2-S3, S6]] the value is 4821, 7730"
    assert lead_first_target(s) == "the value is [[focus S2-S3, S6]] 4821, 7730"
    assert lead_in_target(s, "[[local 256]]") == \
        "[[local 256]] the value is [[global]][[focus S2-S3, S6]] 4821, 7730"
    assert lead_in_target(_hand_sample(), "[[local]]") == _hand_sample().target
    s = _hand_sample(hops=((3, "Mary"), (6, "the kitchen")), scan_last=True,
                     hop_keys=("the apple", "Mary went to "))
    assert hop_target(s) == "[[focus S3]] Mary, [[global]][[focus S6]] the kitchen"
    assert stepwise_target(s, scan=True) == (
        "[[focus S3]] Mary, [[global]][[focus S8]] none, [[focus S7]] none, "
        "[[focus S6]] the kitchen")
    assert stepwise_target(s, keys="first") == (
        "[[local]] the apple[[global]][[focus S3]] Mary, [[global]][[focus S6]] the kitchen")
    assert stepwise_target(s, keys="all", lead_directive="[[local 64]]") == (
        "[[local 64]] the apple[[global]][[focus S3]] Mary, "
        "Mary went to [[global]][[focus S6]] the kitchen")
    assert stepwise_target(s, scan=True, keys="all") == (
        "[[local]] the apple[[global]][[focus S3]] Mary, Mary went to [[global]][[focus S8]] "
        "none, [[focus S7]] none, [[focus S6]] the kitchen")
    assert SCAN_MISS == "none"


def test_every_declaration_written_is_the_protocols_own_rendering(samples):
    """Each ``[[...]]`` a format writes parses, and renders back to the same text."""
    for s in samples.values():
        texts = [led_target(s), lead_first_target(s), lead_in_target(s, "[[local 256]]"),
                 stepwise_target(s, scan=True, keys="all", lead_directive="[[local 128]]")]
        for text in filter(None, texts):
            for body in re.findall(r"\[\[(.*?)\]\]", text):
                assert parse_directive(body).render() == f"[[{body}]]", (s.id, body)
