import pytest
from hypothesis import given
from hypothesis import strategies as st

from dac.protocol import Directive, DirectiveError, Mode, parse_directive


@pytest.mark.parametrize("body, expected", [
    ("global", Directive(Mode.GLOBAL)),
    (" GLOBAL ", Directive(Mode.GLOBAL)),
    ("local", Directive(Mode.LOCAL)),
    ("local 512", Directive(Mode.LOCAL, window=512)),
    ("focus S3", Directive(Mode.FOCUS, ((3, 3),))),
    ("focus: 3", Directive(Mode.FOCUS, ((3, 3),))),
    ("focus S2-S4, S7", Directive(Mode.FOCUS, ((2, 4), (7, 7)))),
    ("Focus s2 - 4,7", Directive(Mode.FOCUS, ((2, 4), (7, 7)))),
])
def test_parse_well_formed(body, expected):
    assert parse_directive(body) == expected


@pytest.mark.parametrize("body, kind", [
    ("attend S3", "unknown_mode"),
    ("focus", "empty_region"),
    ("focus S5-S2", "empty_region"),
    ("focus S0", "empty_region"),
    ("focus S3, banana", "garbage"),
    ("global S3", "garbage"),
    ("local -5", "garbage"),
    ("local 0", "garbage"),
    ("", "garbage"),
    ("!!", "garbage"),
    ("focus S1-S999999", "garbage"),
])
def test_parse_malformed(body, kind):
    with pytest.raises(DirectiveError) as e:
        parse_directive(body)
    assert e.value.kind == kind


def test_sections_union_sorted():
    d = parse_directive("focus S5, S2-S3, S3")
    assert d.sections() == [2, 3, 5]


regions = st.lists(st.tuples(st.integers(1, 500), st.integers(0, 20)).map(lambda t: (t[0], t[0] + t[1])),
                   min_size=1, max_size=6)
directives = st.one_of(
    st.just(Directive(Mode.GLOBAL)),
    st.builds(lambda w: Directive(Mode.LOCAL, window=w), st.one_of(st.none(), st.integers(1, 10**6))),
    regions.map(lambda r: Directive(Mode.FOCUS, tuple(r))),
)


@given(directives)
def test_render_round_trip(d):
    text = d.render()
    assert text.startswith("[[") and text.endswith("]]")
    assert parse_directive(text[2:-2]) == d


@pytest.mark.parametrize("body", ["focus ２", "focus S٣", "focus S1-S٣", "local ２", "local ٣"])
def test_only_ascii_digits(body):
    """Full-width and Arabic-Indic digits are garbage in every directive, not only local."""
    with pytest.raises(DirectiveError) as e:
        parse_directive(body)
    assert e.value.kind == "garbage"


def test_long_section_numbers_parse_when_bounded():
    assert parse_directive("focus S2, S99999999999").sections() == [2, 99999999999]
    with pytest.raises(DirectiveError):  # unbounded, an enormous span is garbage
        parse_directive("focus S1-S99999999999")
    assert parse_directive("focus S1-S99999999999", bounded=True).regions == ((1, 99999999999),)
