"""Scoring functions on hand-made outputs."""

from __future__ import annotations

import pytest

from dac.tasks.scoring import first_integer, match_all, match_part


@pytest.mark.parametrize("pred,refs,want", [
    ("The number is 1234567.", ["1234567"], 1.0),
    ("[[focus S3]] 1234567", ["1234567"], 1.0),
    ("[[focus S3]] nothing", ["1234567"], 0.0),
    ("1234567 and 7654321", ["1234567", "7654321", "1111111", "2222222"], 0.5),
    ("APPLE, Banana", ["apple", "banana"], 1.0),
    ("", ["x"], 0.0),
    ("the [[focus S1234567]] sections", ["1234567"], 0.0),  # directive text is not an answer
])
def test_match_all(pred, refs, want):
    assert match_all(pred, refs) == pytest.approx(want)


def test_match_part():
    assert match_part("I think it is 42", ["41", "42"]) == 1.0
    assert match_part("I think it is 43", ["41", "42"]) == 0.0


@pytest.mark.parametrize("pred,ref,want", [
    ("[[global]] 17", "17", 1.0),
    ("There are 17 passages.", "17", 1.0),
    ("17,000", "17000", 1.0),
    ("12 then 17", "17", 0.0),  # only the first integer counts
    ("seventeen", "17", 0.0),
    ("[[focus S5]] 1753", "1753", 1.0),  # the directive's section number is not the answer
    ("-3", "-3", 1.0),
])
def test_first_integer(pred, ref, want):
    assert first_integer(pred, [ref]) == want
