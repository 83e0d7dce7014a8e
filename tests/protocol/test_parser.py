from hypothesis import given, settings
from hypothesis import strategies as st

from dac.protocol import GLOBAL, Directive, IncrementalDetokenizer, Mode, StreamingParser
from dac.protocol.parser import strip_directives


def feed_all(parser, chunks):
    events = []
    for step, c in enumerate(chunks):
        events += parser.feed(c, step)
    events += parser.finish(len(chunks))
    return events


def test_starts_global_and_switches():
    p = StreamingParser(num_sections=10)
    assert p.current == GLOBAL
    ev = p.feed("Let me look. [[focus S3]] The value", 4)
    assert [e.kind for e in ev] == ["directive"]
    assert ev[0].step == 4
    assert p.current == Directive(Mode.FOCUS, ((3, 3),))


def test_directive_split_across_tokens_completes_on_closing_token():
    p = StreamingParser(num_sections=10)
    chunks = ["[", "[fo", "cus S", "2-S", "4", "]", "]", " answer"]
    steps_with_events = []
    for step, c in enumerate(chunks):
        if p.feed(c, step):
            steps_with_events.append(step)
    assert steps_with_events == [6]
    assert p.current.sections() == [2, 3, 4]


def test_several_directives_in_one_step_last_wins():
    p = StreamingParser(num_sections=10)
    ev = p.feed("[[focus S1]][[local]] [[global]][[focus S9]]", 0)
    assert [e.applied for e in ev][-1] == Directive(Mode.FOCUS, ((9, 9),))
    assert len(ev) == 4
    assert p.current.sections() == [9]


def test_malformed_falls_back_to_global():
    p = StreamingParser(num_sections=10)
    p.feed("[[focus S2]]", 0)
    ev = p.feed("[[focus S]]", 1)
    assert ev[0].kind == "garbage" and not ev[0].ok
    assert p.current == GLOBAL


def test_unknown_sections_dropped_or_fallback():
    p = StreamingParser(num_sections=5)
    ev = p.feed("[[focus S4-S9]]", 0)
    assert ev[0].kind == "unknown_section"
    assert p.current == Directive(Mode.FOCUS, ((4, 5),))
    ev = p.feed("[[focus S7, S8]]", 1)
    assert ev[0].kind == "unknown_section" and p.current == GLOBAL
    assert ev[0].dropped_sections == (7, 8)


def test_unclosed_at_end_and_too_long():
    p = StreamingParser(num_sections=5)
    p.feed("[[focus S2]]", 0)
    assert p.feed("[[focus S3", 1) == []
    assert p.current.sections() == [2]  # a pending directive changes nothing yet
    ev = p.finish(2)
    assert ev[0].kind == "unclosed" and p.current == GLOBAL

    p = StreamingParser(num_sections=5)
    ev = p.feed("[[" + "x" * 200, 0)
    assert ev and ev[0].kind == "unclosed"
    assert p.feed("[[local]]", 1)[0].ok  # the parser recovers


def test_reopen_abandons_previous():
    p = StreamingParser(num_sections=5)
    ev = p.feed("[[focus S1 [[global]]", 0)
    assert [e.kind for e in ev] == ["unclosed", "directive"]
    assert p.current == GLOBAL


def test_triple_bracket_and_lone_brackets():
    p = StreamingParser(num_sections=5)
    ev = p.feed("a [b] c [[[local]]] ]] [", 0)
    assert [e.kind for e in ev] == ["directive"]
    assert p.current.mode is Mode.LOCAL


def test_finished_parser_ignores_input():
    p = StreamingParser()
    p.finish(0)
    assert p.feed("[[local]]", 1) == []


def test_strip_directives():
    assert strip_directives("[[focus S2]] 4711 [[global]]") == "4711"
    assert strip_directives("abc [[focus S2") == "abc"


texts = st.text(alphabet=st.sampled_from(list("[]focusgloballS0123456789-, :xy\n")), max_size=120)


@given(texts, st.lists(st.integers(0, 120), max_size=12))
@settings(max_examples=300, deadline=None)
def test_split_points_do_not_change_final_state(text, cuts):
    """Feeding text in arbitrary chunks ends in the same mode with the same event kinds."""
    whole = StreamingParser(num_sections=20)
    ev_whole = feed_all(whole, [text])
    cuts = sorted({c for c in cuts if 0 < c < len(text)})
    chunks = [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]
    split = StreamingParser(num_sections=20)
    ev_split = feed_all(split, chunks)
    assert split.current == whole.current
    assert [(e.kind, e.applied) for e in ev_split] == [(e.kind, e.applied) for e in ev_whole]


@given(st.text(max_size=200))
@settings(max_examples=200, deadline=None)
def test_arbitrary_text_never_raises(text):
    p = StreamingParser(num_sections=3)
    for i in range(0, len(text), 7):
        p.feed(text[i:i + 7], i)
    p.finish(len(text))
    assert p.current.mode in set(Mode)


def test_detokenizer_deltas_concatenate_to_decode(tokenizer):
    text = "Answer: [[focus S12-S14]] the value is 4711. [[global]] done"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    d = IncrementalDetokenizer(tokenizer)
    out = "".join(d.push([t]) for t in ids) + d.flush()
    assert out == tokenizer.decode(ids)
    p = StreamingParser(num_sections=20)
    d2 = IncrementalDetokenizer(tokenizer)
    for step, t in enumerate(ids):
        p.feed(d2.push([t]), step)
    assert [e.kind for e in p.events] == ["directive", "directive"]
    assert p.current == GLOBAL


def test_out_of_range_sections_are_dropped_as_documented():
    """docs/protocol.md: a focus on sections that partly exist keeps the existing ones."""
    from dac.protocol.grammar import Directive, Mode

    for text, kept in [("[[focus S2, S99999999999]]", ((2, 2),)),
                       ("[[focus S3-S99999999999]]", ((3, 5),))]:
        p = StreamingParser(5)
        (ev,) = p.feed(text, 0)
        assert ev.kind == "unknown_section" and ev.applied == Directive(Mode.FOCUS, kept)
        assert p.current.sections() == sorted({s for lo, hi in kept for s in range(lo, hi + 1)})
    p = StreamingParser(5)
    (ev,) = p.feed("[[focus ２]]", 0)
    assert ev.kind == "garbage" and p.current.mode is Mode.GLOBAL
