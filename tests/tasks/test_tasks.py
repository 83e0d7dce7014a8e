"""Every task generator: determinism, sizing, evidence, directives and scoring of its target."""

from __future__ import annotations

import re

import pytest

from dac.protocol.grammar import Mode, parse_directive
from dac.tasks import FAMILIES, LENGTH_TOLERANCE, TASKS, make_sample, resolve_tasks, score
from dac.tasks.core import group

ALL = sorted(TASKS)
LENGTHS = (1024, 3000)


@pytest.fixture(scope="module")
def samples(tokenizer):
    return {(t, n, s): make_sample(t, tokenizer, n, s)
            for t in ALL for n in LENGTHS for s in (0, 1)}


def test_suite_covers_every_mode():
    assert len(TASKS) >= 15
    fams = {s.family for s in TASKS.values()}
    assert fams == set(FAMILIES)
    for spec in TASKS.values():
        assert spec.max_new_tokens > 0 and spec.description


@pytest.mark.parametrize("task", ALL)
def test_deterministic_per_seed(task, tokenizer, samples):
    again = make_sample(task, tokenizer, 1024, 0)
    assert again == samples[(task, 1024, 0)]
    assert samples[(task, 1024, 1)].sections != samples[(task, 1024, 0)].sections


@pytest.mark.parametrize("task", ALL)
@pytest.mark.parametrize("length", LENGTHS)
def test_length_within_tolerance(task, length, tokenizer, samples):
    for seed in (0, 1):
        s = samples[(task, length, seed)]
        real = s.layout(tokenizer).prompt_len
        assert real == s.prompt_tokens
        assert abs(real - length) <= LENGTH_TOLERANCE * length, (task, length, real)


def _recover(task: str, texts: list[str]) -> list[str]:
    """Recompute the answers from the evidence text alone (tasks whose answer is derived)."""
    if task == "tail_sum":
        return [str(sum(int(re.findall(r"\d+", t)[-1]) for t in texts))]
    if task == "passage_count":
        return [str(len({t.split(":", 1)[1] for t in texts}))]
    return []


@pytest.mark.parametrize("task", ALL)
def test_answer_recoverable_from_evidence_tokens(task, tokenizer, samples):
    for length in LENGTHS:
        s = samples[(task, length, 0)]
        assert s.evidence and s.answers
        layout = s.layout(tokenizer)
        texts = s.evidence_texts()
        # the recorded token spans hold exactly the evidence text
        for (sec, a, b), span, text in zip(s.evidence, s.evidence_spans(layout), texts):
            assert text.strip()
            sec_span = layout.sections[sec - 1]
            assert sec_span.start <= span.start < span.end <= sec_span.end
            decoded = tokenizer.decode(layout.input_ids[span.start:span.end])
            assert text in decoded
        derived = _recover(task, texts)
        if derived:
            assert derived == s.answers
        else:
            joined = "\n".join(texts)
            for ans in s.answers:
                assert ans in joined, (task, ans)


@pytest.mark.parametrize("task", ALL)
def test_directive_and_target(task, samples):
    s = samples[(task, 3000, 0)]
    d = s.directive
    assert parse_directive(d.render()[2:-2]) == d
    assert s.target.startswith(d.render() + " ")
    if s.family == "aggregation":
        assert d.mode is Mode.GLOBAL
    elif s.family == "local":
        assert d.mode is Mode.LOCAL
        assert {sec for sec, _, _ in s.evidence} == {len(s.sections)}
    else:
        assert d.mode is Mode.FOCUS
        assert d.sections() == sorted({sec for sec, _, _ in s.evidence})
    # the ideal answer scores 1, an empty or wrong one does not
    assert score(task, s.target, s) == 1.0
    assert score(task, s.answer_text, s) == 1.0
    assert score(task, "[[global]] I do not know.", s) == 0.0


def test_haystack_has_no_markers_or_directives(samples):
    for s in samples.values():
        for sec in s.sections:
            assert "[[" not in sec and "]]" not in sec and not re.search(r"\[S\d+\]", sec)


def test_local_evidence_is_recent(tokenizer, samples):
    """Tail tasks: the evidence lies within the default local window of the prompt's end."""
    from dac.planning.blocks import PlanConfig

    for task in ("tail_last", "tail_sum"):
        s = samples[(task, 3000, 0)]
        layout = s.layout(tokenizer)
        first = min(sp.start for sp in s.evidence_spans(layout))
        assert layout.prompt_len - first <= PlanConfig().local_window


def test_too_short_and_unknown(tokenizer):
    with pytest.raises(ValueError, match="needs at least"):
        make_sample("niah_multikey_dense", tokenizer, 200, 0)
    with pytest.raises(ValueError, match="unknown task"):
        make_sample("nope", tokenizer, 1024, 0)
    with pytest.raises(ValueError, match="at least 64"):
        make_sample("passkey", tokenizer, 10, 0)


def test_resolve_tasks():
    assert resolve_tasks("all") == list(TASKS)
    assert resolve_tasks("local") == ["tail_last", "tail_sum"]
    assert resolve_tasks("passkey,passkey,kv_json") == ["passkey", "kv_json"]
    with pytest.raises(ValueError, match="unknown task"):
        resolve_tasks("passkey,bogus")


def test_group_keeps_units_whole_and_balanced():
    units = [f"u{i}" * (1 + i % 3) for i in range(20)]
    secs, where = group(units, 4, " ")
    assert len(secs) == 4 and " ".join(secs) == " ".join(units)
    for u, (sec, off) in zip(units, where):
        assert secs[sec - 1][off:off + len(u)] == u
    secs, where = group(["a", "b"], 4, " ")  # fewer units than sections
    assert secs == ["a", "b"]


def test_chat_template_prompt_is_sized_and_mapped(tokenizer):
    """With a chat template the sizing and the evidence mapping hold on the templated prompt."""
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n"
                         "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
    for task in ("niah_multiquery", "kv_json", "tail_sum"):
        s = make_sample(task, tok, 2048, 3)
        layout = s.layout(tok)
        assert "<|assistant|>" in layout.text and layout.prompt_len == s.prompt_tokens
        assert abs(layout.prompt_len - 2048) <= LENGTH_TOLERANCE * 2048
        for span, text in zip(s.evidence_spans(layout), s.evidence_texts()):
            assert text in tok.decode(layout.input_ids[span.start:span.end])


def test_same_sample_in_another_process(samples):
    """Samples do not depend on Python's per-process hash seed."""
    import json
    import os
    import subprocess
    import sys

    code = ("import json; from dac.models import tiny_tokenizer; from dac.tasks import "
            "make_sample; tok = tiny_tokenizer(); print(json.dumps([make_sample(t, tok, 1024, 1)"
            ".sections for t in ('common_words', 'frequent_words', 'world_state')]))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert json.loads(out) == [samples[(t, 1024, 1)].sections
                               for t in ("common_words", "frequent_words", "world_state")]


@pytest.mark.parametrize("task", ["passkey", "niah_multikey", "tail_last", "niah_multivalue"])
def test_sections_can_be_set_and_the_default_is_unchanged(task, tokenizer, samples):
    """``sections=k`` cuts the context into at most k sections (training varies it; units stay
    whole, so a context of few long units gets fewer); evidence and the ideal directive follow;
    ``None`` is the suite's default sectioning, sample for sample."""
    assert make_sample(task, tokenizer, 1024, 0, sections=None) == samples[(task, 1024, 0)]
    for k in (1, 6, 16):
        s = make_sample(task, tokenizer, 1024, 0, sections=k)
        assert len(s.sections) <= max(k, 2 if s.family == "local" else 1)
        if s.family == "retrieval":  # sentence-sized units: close to k
            assert len(s.sections) >= 0.6 * k
        assert abs(s.prompt_tokens - 1024) <= 1024 * LENGTH_TOLERANCE
        assert all(1 <= sec <= len(s.sections) for sec, _, _ in s.evidence)
        for (sec, a, b), text in zip(s.evidence, s.evidence_texts()):
            assert text == s.sections[sec - 1][a:b] and text.strip()
        if s.directive.mode is Mode.FOCUS:
            assert s.directive.sections() == sorted({sec for sec, _, _ in s.evidence})
    with pytest.raises(ValueError, match="sections"):
        make_sample(task, tokenizer, 1024, 0, sections=0)


def test_varied_sections_make_every_focus_token_a_target(tokenizer):
    """What a training stage with ``sections: [4, 16]`` draws at 1K tokens: the needle's
    section spreads over S1..S16 instead of S1..S4."""
    seen = {make_sample("niah_single_noise", tokenizer, 1024, seed, sections=16).directive
            .sections()[0] for seed in range(40)}
    assert len(seen) >= 12 and max(seen) >= 14
