"""Property-based tests of the directive grammar, the streaming parser and the detokenizer.

The contract pinned here: feeding generated text in any split gives the same events (kind,
text, directive, fallback, message) as feeding it whole; no input raises; the directive in force
is always well-formed; and token-by-token detokenization reproduces the decoded text exactly.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from dac.models import tiny_tokenizer
from dac.protocol import (GLOBAL, Directive, DirectiveError, IncrementalDetokenizer, Mode,
                          StreamingParser, parse_directive, strip_directives)
from dac.protocol.grammar import MAX_DIRECTIVE_CHARS, MAX_SECTION_SPAN
from tests.reliability.fuzz import fuzz

FUZZ = fuzz(300)

# -- strategies -------------------------------------------------------------------------------
FRAGMENTS = [
    "[[global]]", "[[local]]", "[[local 12]]", "[[local 0]]", "[[focus S3]]", "[[focus S2-S4, S7]]",
    "[[focus 1-2,9]]", "[[focus S99]]", "[[focus S5-S2]]", "[[focus]]", "[[focus S0]]",
    "[[ GLOBAL ]]", "[[global:]]", "[[nonsense]]", "[[]]", "[[", "]]", "[", "]", "[[[", "]]]",
    "[[focus S1", "[[local ²]]", "[[local ١٢]]", "[[focus S١]]", "[[focus S1,,S2]]", " ", "\n",
    "S3", "-", ",", "Answer: ", "é", "漢字", "\ufffd", "[[focus S" + "1" * 9 + "]]",
    "[[focus S1-S999999]]", "x" * (MAX_DIRECTIVE_CHARS - 1), "y" * MAX_DIRECTIVE_CHARS,
]
directive_text = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS),
              st.text(alphabet="[]SsfocuglbalL0123456789 ,-:", max_size=12),
              st.text(max_size=6)),
    max_size=40).map("".join)


def split_at(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    bounds = [0, *points, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:])]


def key(events) -> list[tuple]:
    """What must not depend on how the text was split (the step naturally does)."""
    return [(e.kind, e.text, e.directive, e.applied, e.message, e.dropped_sections)
            for e in events]


def run_parser(chunks: list[str], num_sections: int | None) -> StreamingParser:
    p = StreamingParser(num_sections)
    for step, c in enumerate(chunks):
        p.feed(c, step)
    p.finish(len(chunks))
    return p


def check_directive(d: Directive, num_sections: int | None) -> None:
    assert isinstance(d, Directive)
    if d.mode is Mode.FOCUS:
        assert d.regions, "a focus in force names at least one section"
        for lo, hi in d.regions:
            assert 1 <= lo <= hi
            if num_sections is not None:
                assert hi <= num_sections
    else:
        assert d.regions == ()
    if d.window is not None:
        assert d.mode is Mode.LOCAL and d.window > 0


# -- the streaming parser ---------------------------------------------------------------------
@FUZZ
@given(text=directive_text, cuts=st.lists(st.integers(0, 10_000), max_size=30),
       num_sections=st.one_of(st.none(), st.integers(1, 12)))
@example(text="x[[[global]]", cuts=[3], num_sections=None)  # extra "[" after a split opener
@example(text="[[" + "a" * 60 + "a" * 60 + "]]", cuts=[62], num_sections=None)  # too long
@example(text="[[" + "a" * MAX_DIRECTIVE_CHARS + "]]", cuts=[2 + MAX_DIRECTIVE_CHARS + 1],
         num_sections=None)  # a body of exactly the limit, its close split in two
@example(text="[[" + "a" * MAX_DIRECTIVE_CHARS + "[[global]]", cuts=[2 + MAX_DIRECTIVE_CHARS + 1],
         num_sections=None)
def test_split_invariance(text, cuts, num_sections):
    whole = run_parser([text], num_sections)
    split = run_parser(split_at(text, cuts), num_sections)
    chars = run_parser(list(text), num_sections)
    assert key(split.events) == key(whole.events)
    assert key(chars.events) == key(whole.events)
    assert split.current == whole.current == chars.current


@FUZZ
@given(text=directive_text, num_sections=st.one_of(st.none(), st.integers(1, 12)))
def test_parser_never_raises_and_state_is_valid(text, num_sections):
    p = StreamingParser(num_sections)
    for step, ch in enumerate(text):
        for e in p.feed(ch, step):
            assert e.step == step
            assert e.applied is not None and e.applied == p.current
            check_directive(e.applied, num_sections)
            if e.ok:
                assert e.directive == e.applied
                assert e.text.startswith("[[") and e.text.endswith("]]")
            else:
                assert e.kind in {"unknown_mode", "empty_region", "garbage", "unknown_section",
                                  "unclosed"}
                if e.kind == "unknown_section":
                    assert e.dropped_sections
                else:
                    assert e.applied == GLOBAL
                if e.kind == "unclosed":
                    assert len(e.text) <= MAX_DIRECTIVE_CHARS + 1
        check_directive(p.current, num_sections)
    p.finish(len(text))
    check_directive(p.current, num_sections)
    assert p.feed("[[focus S1]]", len(text) + 1) == []  # nothing after finish
    assert "[[" not in strip_directives(text)  # the answer never shows a directive opener


def test_every_directive_applies_once_and_last_wins():
    """Thousands of mode switches in one delta: each is one event, the last one is in force."""
    parts = ["[[global]]", "[[focus S2]]", "[[local 8]]", "[[focus S1-S3]]"] * 750
    p = StreamingParser(4)
    events = p.feed("".join(parts), 0)
    assert len(events) == 3000 and all(e.ok for e in events)
    assert p.current == Directive(Mode.FOCUS, ((1, 3),))


def test_unicode_digit_window_is_garbage_not_a_crash():
    """'²'.isdigit() is True but int('²') raises: found by fuzzing, now a clean DirectiveError."""
    with pytest.raises(DirectiveError) as e:
        parse_directive("local ²")
    assert e.value.kind == "garbage"
    p = StreamingParser(3)
    assert [ev.kind for ev in p.feed("[[focus S2]] [[local ²]]", 0)] == ["directive", "garbage"]
    assert p.current == GLOBAL


def test_split_opener_with_extra_bracket():
    """'[[' then '[global]]' opens at the last '[[' exactly like the whole text does."""
    p = StreamingParser()
    p.feed("x[[", 0)
    (ev,) = p.feed("[global]]", 1)
    assert ev.ok and ev.text == "[[global]]"


def test_too_long_body_is_unclosed_however_split():
    body = "focus " + ", ".join(f"S{i}" for i in range(1, 40))  # > MAX_DIRECTIVE_CHARS chars
    assert len(body) > MAX_DIRECTIVE_CHARS
    for chunks in ([f"[[{body}]]"], list(f"[[{body}]]")):
        p = run_parser(chunks, 50)
        assert [e.kind for e in p.events] == ["unclosed"]
        assert p.events[0].text == body[:MAX_DIRECTIVE_CHARS + 1]
        assert p.current == GLOBAL


# -- the grammar ------------------------------------------------------------------------------
regions = st.lists(st.tuples(st.integers(1, 999_999), st.integers(0, MAX_SECTION_SPAN)),
                   min_size=1, max_size=6).map(
    lambda rs: tuple((lo, min(lo + w, 999_999)) for lo, w in rs))
directives = st.one_of(
    st.just(Directive(Mode.GLOBAL)),
    st.builds(Directive, st.just(Mode.LOCAL), st.just(()), st.one_of(st.none(), st.integers(1, 10**12))),
    st.builds(Directive, st.just(Mode.FOCUS), regions),
)


@FUZZ
@given(directives)
def test_render_round_trip(d):
    text = d.render()
    assert text.startswith("[[") and text.endswith("]]")
    assert parse_directive(text[2:-2]) == d
    p = StreamingParser()
    (ev,) = p.feed("answer " + text + " more", 0)
    if len(text) - 4 <= MAX_DIRECTIVE_CHARS:
        assert ev.ok and ev.directive == d and p.current == d
    else:  # the streaming parser bounds a directive's length (a long one is garbage)
        assert ev.kind == "unclosed" and p.current == GLOBAL


@FUZZ
@given(st.text(max_size=40))
def test_parse_directive_raises_only_directive_error(body):
    try:
        d = parse_directive(body)
    except DirectiveError as e:
        assert e.kind in {"unknown_mode", "empty_region", "garbage"}
    else:
        check_directive(d, None)
        assert parse_directive(d.render()[2:-2]) == d


# -- detokenizer -> parser (what the engine does) ---------------------------------------------
TOK = tiny_tokenizer()
VOCAB = len(TOK)


def detok_stream(ids: list[int]) -> list[str]:
    d = IncrementalDetokenizer(TOK)
    deltas = [d.push([t]) for t in ids]
    deltas.append(d.flush())
    return deltas


@FUZZ
@given(ids=st.lists(st.integers(0, VOCAB - 1), max_size=60))
def test_detokenizer_reproduces_decoded_text(ids):
    deltas = detok_stream(ids)
    assert "".join(deltas) == TOK.decode(ids, skip_special_tokens=True,
                                         clean_up_tokenization_spaces=False)


@FUZZ
@given(text=directive_text, noise=st.lists(st.integers(0, VOCAB - 1), max_size=10),
       num_sections=st.one_of(st.none(), st.integers(1, 12)))
def test_token_stream_gives_the_events_of_its_text(text, noise, num_sections):
    """Generated text tokenized, pushed id by id through the detokenizer into the parser, gives
    the events of the decoded text fed whole (random ids mixed in: byte fragments, specials)."""
    ids = TOK(text, add_special_tokens=False)["input_ids"] + noise
    ids += TOK(text[::-1], add_special_tokens=False)["input_ids"]
    deltas = detok_stream(ids)
    whole = TOK.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    assert key(run_parser(deltas, num_sections).events) == key(run_parser([whole], num_sections).events)


# -- prompts that contain directive-like text ---------------------------------------------------
section_text = st.lists(st.one_of(st.sampled_from(FRAGMENTS + ["[S2]", "[S10]", "S1:", "Question:"]),
                                  st.text(min_size=1, max_size=8)),
                        min_size=1, max_size=12).map("".join).filter(lambda s: s.strip())


@FUZZ
@given(sections=st.lists(section_text, min_size=1, max_size=6), question=section_text)
def test_layout_of_adversarial_prompts(sections, question):
    """Directive- and marker-like text in the document or question leaves the layout sane:
    spans ordered, disjoint, inside the prompt, each section holding its own text."""
    from dac.protocol import build_prompt

    lay = build_prompt(TOK, sections, question)
    n = lay.prompt_len
    assert lay.num_sections == len(sections)
    prev = lay.preamble.end
    assert lay.preamble.start == 0 and prev == lay.sections[0].start
    for k, s in enumerate(lay.sections, 1):
        assert prev <= s.start < s.end <= n
        a, b = lay.section_chars[k - 1]
        assert lay.text[a:b] == sections[k - 1]
        prev = s.end
    (q,) = lay.protected
    assert lay.sections[-1].end <= q.start <= q.end == n
    assert question.strip() in lay.text[lay.offsets[q.start][0]:]


#: Unicode decimal digits that are not ASCII (full-width, Arabic-Indic, Devanagari, Bengali)
OTHER_DIGITS = st.sampled_from("０１２３４５６７８９٠١٢٣٤٥٦٧٨٩०१२३४५६७८९০১২৩")


@FUZZ
@given(mode=st.sampled_from(["focus S", "focus ", "local "]), digits=st.lists(
    st.one_of(OTHER_DIGITS, st.sampled_from("0123456789")), min_size=1, max_size=4))
def test_only_ascii_digits_anywhere(mode, digits):
    """A directive number with any non-ASCII digit is garbage in every mode (global after it);
    all-ASCII numbers parse."""
    text = "[[" + mode + "".join(digits) + "]]"
    p = StreamingParser(9)
    (ev,) = p.feed(text, 0)
    if any(not d.isascii() for d in digits):
        assert ev.kind == "garbage" and p.current == GLOBAL
    else:  # well-formed, or a zero (an empty focus region, or a local window of 0)
        zero = int("".join(digits)) == 0
        assert ev.kind in ("directive", "unknown_section") or zero


@FUZZ
@given(n=st.integers(1, 12), keep=st.lists(st.integers(1, 12), min_size=1, max_size=3),
       big=st.lists(st.integers(13, 10 ** 12), min_size=1, max_size=3))
def test_out_of_range_sections_are_dropped_whatever_their_size(n, keep, big):
    """docs/protocol.md: a focus on sections that partly exist keeps the existing ones;
    sections past the prompt are dropped however many digits they have."""
    valid = [k for k in keep if k <= n]
    regions = ", ".join(f"S{k}" for k in [*keep, *big])
    p = StreamingParser(n)
    (ev,) = p.feed(f"[[focus {regions}]]", 0)
    if valid:
        assert ev.kind in ("unknown_section", "directive") and p.current.mode is Mode.FOCUS
        assert p.current.sections() == sorted(set(valid))
    else:
        assert ev.kind == "unknown_section" and p.current == GLOBAL
