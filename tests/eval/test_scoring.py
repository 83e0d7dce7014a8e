"""Native metrics on hand-made cases, both ways: they must reward the right answer and fail
the wrong one."""

from __future__ import annotations

import pytest

from dac.eval.scoring import METRICS, choice_letter, score_example
from dac.eval.sources import SourceExample

OPTS = ["the red house", "the blue boat", "the green field", "the old mill"]


@pytest.mark.parametrize("pred, want", [
    ("B", "B"), ("(B)", "B"), ("B.", "B"), ("Answer: B", "B"), ("answer: (c)", "C"),
    ("The correct answer is (D).", "D"), ("B) the blue boat", "B"),
    ("I think it is the green field.", "C"), ("[[focus S2]] <answer>(A)</answer>", "A"),
    ("A", "A"), ("A good guess: C", "C"),
])
def test_choice_letter(pred, want):
    assert choice_letter(pred, OPTS) == want


@pytest.mark.parametrize("pred", ["", "no idea", "the red house or the old mill"])
def test_choice_letter_none(pred):
    assert choice_letter(pred, OPTS) is None


def test_choice_metric():
    assert METRICS["choice"]("(B)", ["B"], OPTS) == 1.0
    assert METRICS["choice"]("(C)", ["B"], OPTS) == 0.0
    assert METRICS["choice"]("no idea", ["B"], OPTS) == 0.0


def test_substring_is_rulers_string_match_all():
    m = METRICS["substring"]
    assert m("The numbers are 123 and 456.", ["123", "456"]) == 1.0
    assert m("The number is 123.", ["123", "456"]) == 0.5
    assert m("nothing", ["123"]) == 0.0
    assert m("UUID ABC-def", ["abc-DEF"]) == 1.0


def test_f1_uses_longbench_normalization():
    m = METRICS["f1"]
    assert m("The Eiffel Tower!", ["eiffel tower"]) == 1.0
    assert m("Paris", ["eiffel tower"]) == 0.0
    assert m("eiffel", ["eiffel tower"]) == pytest.approx(2 / 3)
    assert m("x", ["y", "x"]) == 1.0  # best over references


def test_rouge_l():
    m = METRICS["rouge_l"]
    ref = "the council approved the new budget for the city parks"
    assert m(ref, [ref]) == pytest.approx(1.0)
    assert m("stock prices fell sharply", [ref]) == 0.0
    assert 0.3 < m("the council approved a budget", [ref]) < 1.0


def test_cloze_exact_match_per_mask():
    m = METRICS["cloze"]
    refs = ["<mask-0>: Justin Timberlake", "<mask-1>: Kentwood"]
    assert m("{'<mask-0>': 'Justin Timberlake', '<mask-1>': 'Kentwood'}", refs) == 1.0
    assert m('{"<mask-0>": "justin timberlake", "<mask-1>": "Paris"}', refs) == 0.5
    assert m("<mask-0>: Justin Timberlake\n<mask-1>: Kentwood", refs) == 1.0
    assert m("Justin Timberlake", refs) == 0.0
    assert m("Kentwood.", ["<mask-0>: Kentwood"]) == 1.0  # a single mask: the bare entity
    assert m("Kentwood, Louisiana", ["<mask-0>: Kentwood"]) == 0.0


def test_exp_similarity_is_space_digests():
    m = METRICS["exp_similarity"]
    assert m("45%", ["45%"]) == 1.0
    assert m("35%", ["45%"]) == pytest.approx(0.5)  # 2 ** (-10 * 0.10)
    assert m("The share is 55.0 percent", ["45%"]) == pytest.approx(0.5)
    assert m("no number", ["45%"]) == 0.0


def test_exact():
    assert METRICS["exact"]("The Senate.", ["senate"]) == 1.0
    assert METRICS["exact"]("the senate floor", ["senate"]) == 0.0


def test_score_example_dispatches_on_the_examples_metric():
    ex = SourceExample("x", "1", "ctx", "q?", ["C"], choices=OPTS, metric="choice")
    assert score_example(ex, "Answer: C") == 1.0
    assert score_example(ex, "Answer: A") == 0.0
    bad = SourceExample("x", "1", "ctx", "q?", ["C"], metric="nope")
    with pytest.raises(ValueError, match="unknown metric"):
        score_example(bad, "C")


def test_prompt_question_letters_choices_and_hints():
    ex = SourceExample("x", "1", "ctx", "Which one?", ["B"], choices=OPTS, metric="choice")
    q = ex.prompt_question()
    assert q.splitlines()[0] == "Which one?"
    assert "(A) the red house" in q and "(D) the old mill" in q
    assert q.splitlines()[-1].startswith("Answer with the letter")
