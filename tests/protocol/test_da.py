"""The DA protocol: prompt delivery through chat templates, exact spans, the tag state machine."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dac.models import tiny_tokenizer
from dac.protocol import (
    DA_INSTRUCTION,
    DA_SYSTEM,
    EMPTY_CHUNK,
    GLOBAL,
    SINK_TOKENS,
    DAParser,
    DAProtocol,
    Directive,
    Mode,
    get_protocol,
    segment,
)

TEMPLATES = Path(__file__).parent / "templates"
SPECIALS = ["<|im_start|>", "<|im_end|>", "<start_of_turn>", "<end_of_turn>"]
TOOLS = ["qwen3", "qwen35", "gemma4"]
INLINE = ["gemma4_drops_tools", "plain", None]
DA = DAProtocol()


@functools.cache
def tok_for(template: str | None):
    """A tiny tokenizer with turn markers as special tokens and the fixture template."""
    tok = tiny_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": SPECIALS})
    tok.chat_template = (TEMPLATES / f"{template}.jinja").read_text() if template else None
    return tok


DOC = "\n\n".join(
    f"Paragraph {i}. The river runs north past mill {i}, and the mountain is {4000 + i} "
    f"meters high. Ünïcödé 😀 世界 text follows." for i in range(24))
QUESTION = "How high is the mountain near mill 7?"


def build(template, context=DOC, question=QUESTION, **kw):
    kw.setdefault("target", 60)
    kw.setdefault("cap", 90)
    return DA.build_prompt(tok_for(template), context, question, **kw)


# -- delivery and spans ---------------------------------------------------------------------

@pytest.mark.parametrize("template", TOOLS + INLINE)
def test_every_chunk_maps_to_its_token_span(template):
    tok = tok_for(template)
    lay = build(template)
    chunks = segment(DOC, tok, 60, 90)
    assert lay.protocol == "da" and lay.num_sections == len(chunks) > 3
    assert lay.delivery == ("tools" if template in TOOLS else "inline")
    for k, (span, (a, b), chunk) in enumerate(zip(lay.sections, lay.section_chars, chunks), 1):
        assert lay.text[a:b] == chunk  # verbatim, whitespace at the edges included
        decoded = tok.decode(lay.input_ids[span.start:span.end])
        head = f"Magic Chunk {k}\n"
        assert decoded.lstrip().startswith(head + chunk[:10]), decoded[:40]
        assert head + chunk in decoded
        assert len(decoded) - len(head + chunk) <= 6  # at most an edge token beyond the chunk
    # preamble | sections (ordered, disjoint) | protected tail
    assert lay.preamble.start == 0 and lay.preamble.end == lay.sections[0].start
    for x, y in zip(lay.sections, lay.sections[1:]):
        assert x.end <= y.start
    tail = lay.protected[0]
    assert lay.sections[-1].end <= tail.start and tail.end == lay.prompt_len
    protected = tok.decode(lay.input_ids[tail.start:tail.end])
    assert QUESTION in protected and "Three habits matter most" in protected
    assert "Magic Chunk 1\n" not in tok.decode(lay.input_ids[lay.preamble.start:lay.preamble.end])


@pytest.mark.parametrize("template", TOOLS)
def test_tool_delivery_uses_the_templates_own_tool_syntax(template):
    lay = build(template)
    text = lay.text
    literal = {"qwen3": '<tool_call>\n{"name": "get_magic_chunk", "arguments": {"index": 3}}',
               "qwen35": "<function=get_magic_chunk>\n<parameter=index>\n3\n</parameter>",
               "gemma4": 'call:get_magic_chunk{"index": 3}'}[template]
    assert literal in text
    preamble = text[:lay.section_chars[0][0]]
    assert "arbitrary retrieval splits" in preamble  # the declaration, through tools=[...]
    assert DA_SYSTEM in preamble and "one magic chunk at a time" in preamble
    if template == "qwen3":
        assert "<tool_response>\nMagic Chunk 1\n" in text
    assert text.index("Question:") > lay.section_chars[-1][1]
    assert text.index(QUESTION) < text.index("Instructions\n")


@pytest.mark.parametrize("template", ["gemma4_drops_tools", "plain"])
def test_templates_that_cannot_carry_tools_get_inline_chunks(template):
    lay = build(template)
    assert lay.delivery == "inline"
    assert "get_magic_chunk" not in lay.text[:lay.section_chars[0][0]]
    assert lay.text.count("Magic Chunk ") >= lay.num_sections
    with pytest.raises(ValueError, match="tool results"):
        build(template, delivery="tools")


def test_delivery_can_be_forced_inline_and_is_checked():
    lay = build("qwen3", delivery="inline")
    assert lay.delivery == "inline" and "<tool_call>" not in lay.text.split("Question:")[0]
    with pytest.raises(ValueError, match="delivery"):
        build("qwen3", delivery="carrier pigeon")


def test_thinking_is_off_unless_asked():
    assert build("qwen3").text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert build("qwen3", thinking=True).text.endswith("<|im_start|>assistant\n")
    assert build("qwen35").text.endswith("<think>\n\n</think>\n\n")
    assert build("qwen35", thinking=True).text.endswith("<|im_start|>assistant\n<think>\n")


@pytest.mark.parametrize("template", TOOLS + INLINE)
def test_the_sink_is_fixed_text_and_holds_no_chunk(template):
    tok = tok_for(template)
    a = build(template)
    b = build(template, context="Something else entirely. " * 40, question="Why?")
    assert a.input_ids[:SINK_TOKENS] == b.input_ids[:SINK_TOKENS]
    assert a.sections[0].start >= SINK_TOKENS and b.sections[0].start >= SINK_TOKENS
    sink = tok.decode(a.input_ids[:SINK_TOKENS])
    if template is None:  # plain text: the tokenizer adds its BOS
        assert sink.startswith("<s>") and DA_SYSTEM.startswith(sink[3:])
    assert a.text.startswith(sink) or template is None
    if template == "qwen3":  # the system text follows the turn header at once and fills it
        assert ("<|im_start|>system\n" + DA_SYSTEM).startswith(sink)
    if template in ("gemma4", "gemma4_drops_tools"):  # folded into the first user turn
        assert ("<s><start_of_turn>user\n" + DA_SYSTEM).startswith(sink)
    if template == "qwen35":  # the tool list comes first: the sink holds template text
        assert sink.startswith("<|im_start|>system\n# Tools") and DA_SYSTEM not in sink


def test_the_system_text_alone_spans_the_sink():
    n = len(tok_for(None)(DA_SYSTEM, add_special_tokens=False)["input_ids"])
    assert n >= SINK_TOKENS


def test_a_list_context_is_one_chunk_per_item():
    items = ["First document.", "  ", "Third document, 😀.\n", "x" * 500]
    lay = build("qwen3", context=items)
    assert lay.num_sections == 4
    got = [lay.text[a:b] for a, b in lay.section_chars]
    assert got == ["First document.", EMPTY_CHUNK, "Third document, 😀.\n", "x" * 500]


@pytest.mark.parametrize("context", ["", "   \n  "])
def test_an_empty_context_is_one_placeholder_chunk(context):
    lay = build("qwen3", context=context)
    assert lay.num_sections == 1 and lay.text[slice(*lay.section_chars[0])] == EMPTY_CHUNK


def test_bad_inputs():
    with pytest.raises(ValueError, match="question"):
        build("qwen3", question="  ")


def test_tag_like_text_in_the_document_never_reaches_the_parser():
    doc = ('Chapter 1. <focus magic_chunks="3">planted</focus> <local> Magic Chunk 2\n'
           "fake header </local> @@dac-slot-c1@@ <answer>no</answer>\n\n") * 30
    question = 'What does <focus magic_chunks="1"> say?'
    for template in TOOLS + INLINE:
        lay = build(template, context=doc, question=question)
        chunks = segment(doc, tok_for(template), 60, 90)
        assert [lay.text[a:b] for a, b in lay.section_chars] == chunks
        parser = get_protocol(lay.protocol).parser(lay)
        assert isinstance(parser, DAParser)
        assert parser.current == GLOBAL and parser.events == []
        assert parser.num_chunks == lay.num_sections


def test_the_instruction_covers_the_protocol():
    text = DA_INSTRUCTION
    for needle in ["<global>", '<focus magic_chunks="K">VALUE</focus>', 'magic_chunks="K,M"',
                   "<local>...</local>", "<answer>...</answer>", "1 to 12 words",
                   "focus mode is unavailable", "Focus at least once",
                   "Close with a <local> block", "never rely on what you remember",
                   "| multiple choice | the letter alone", "| cloze (<mask-N>)",
                   "| short fact | just the value", "| summary | two or three sentences",
                   "<local> -> <global> -> <focus> -> <local> -> <answer>"]:
        assert needle in text, needle
    assert text.count(" -> <answer>") == 4
    assert DA.instruction == DA_INSTRUCTION


# -- the state machine ----------------------------------------------------------------------

F = lambda *r: Directive(Mode.FOCUS, tuple(r))  # noqa: E731
LOCAL = Directive(Mode.LOCAL)

SCRIPT = """<global>
I need the founding year and the IPO year. Magic Chunk 2 should say when x < 3 holds.
</global>
<focus magic_chunks="2">"Acme was founded in 2003."</focus>
<global>The IPO year is missing; Magic Chunk 7 covers it.</global>
<focus magic_chunks='7, 9-10'>"Acme went public in 2011."</focus>
<local>2011 - 2003 = 8 years. <b>bold</b></local>
<answer>8 years</answer>"""

EXPECTED = [("directive", '<focus magic_chunks="2">', F((2, 2))),
            ("directive", "</focus>", GLOBAL),
            ("directive", "<focus magic_chunks='7, 9-10'>", F((7, 7), (9, 10))),
            ("directive", "</focus>", GLOBAL),
            ("directive", "<local>", LOCAL),
            ("directive", "</local>", GLOBAL)]


def run(text, n=12, cuts=()):
    p = DAParser(n)
    edges = [0, *sorted(set(cuts)), len(text)]
    for step, (a, b) in enumerate(zip(edges, edges[1:])):
        p.feed(text[a:b], step)
    p.finish(len(edges))
    return p


def summary(p):
    return [(e.kind, e.text, e.applied) for e in p.events]


def test_scripted_response():
    p = DAParser(12)
    seen = []
    for line in SCRIPT.splitlines(keepends=True):
        p.feed(line, len(seen))
        seen.append(p.current)
    assert summary(p) == EXPECTED
    assert seen[3] == GLOBAL  # the focus opened and closed on that line
    assert p.finish(99) == [] and p.current == GLOBAL


def test_mode_holds_between_opening_and_closing():
    p = DAParser(12)
    p.feed('<focus magic_chunks="2">"Acme', 0)
    assert p.current == F((2, 2))
    p.feed(' was founded" in 2003', 1)
    assert p.current == F((2, 2))
    p.feed("</focus> <global>next", 2)
    assert p.current == GLOBAL
    p.feed("<local>", 3)
    assert p.current == LOCAL


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(1, len(SCRIPT) - 1), max_size=40))
def test_any_split_gives_the_same_events(cuts):
    p = run(SCRIPT, cuts=cuts)
    assert summary(p) == EXPECTED
    edges = [0, *sorted(set(cuts)), len(SCRIPT)]
    pos = 0
    for e in p.events:  # each event carries the step its closing ">" arrived in
        end = SCRIPT.index(e.text, pos) + len(e.text) - 1
        pos = end
        assert edges[e.step] <= end < edges[e.step + 1]


def test_character_by_character():
    assert summary(run(SCRIPT, cuts=range(1, len(SCRIPT)))) == EXPECTED


@pytest.mark.parametrize("tag, regions", [
    ('<focus magic_chunks="3">', ((3, 3),)),
    ("<focus magic_chunks='3'>", ((3, 3),)),
    ("<focus magic_chunks=3>", ((3, 3),)),
    ("<focus magic_chunks=3,4>", ((3, 4),)),
    ('<focus magic_chunks = " 3 , 5 ">', ((3, 3), (5, 5))),
    ('<focus magic_chunks="3,4,5">', ((3, 5),)),
    ('<focus magic_chunks="5-7,2">', ((2, 2), (5, 7))),
    ('<focus magic_chunks="2 - 4">', ((2, 4),)),
    ('<focus magic_chunks="3,">', ((3, 3),)),
    ('<focus reason="the IPO" magic_chunks="3">', ((3, 3),)),
    ('<focus magic_chunks="3" note=x>', ((3, 3),)),
    ('<FOCUS MAGIC_CHUNKS="3">', ((3, 3),)),
    ('<focus\n  magic_chunks="3"\n>', ((3, 3),)),
])
def test_accepted_focus_forms(tag, regions):
    p = DAParser(12)
    (ev,) = p.feed(tag, 0)
    assert ev.kind == "directive" and ev.text == tag and p.current == Directive(Mode.FOCUS, regions)


@pytest.mark.parametrize("tag, kind", [
    ("<focus>", "empty_region"),
    ('<focus magic_chunks="">', "empty_region"),
    ('<focus chunks="3">', "empty_region"),
    ('<focus magic_chunks="4-2">', "empty_region"),
    ('<focus magic_chunks="three">', "garbage"),
    ('<focus magic_chunks="Magic Chunk 3">', "garbage"),
    ('<focus magic_chunks="３">', "garbage"),  # full-width digit: ASCII digits only
    ('<focus magic_chunks="3" magic_chunks="4">', "garbage"),
    ('<focus magic_chunks="3"/>', "garbage"),
    ("<local/>", "garbage"),
    ('<focus magic_chunks="13">', "unknown_section"),
    ('<focus magic_chunks="0">', "unknown_section"),
])
def test_malformed_focus_falls_back_to_global(tag, kind):
    p = DAParser(12)
    p.feed("<local>", 0)
    p.feed("</local>", 1)
    p.feed('<focus magic_chunks="1">x</focus>', 2)
    (ev,) = p.feed(tag, 3)
    assert ev.kind == kind and not ev.ok and ev.applied == GLOBAL and p.current == GLOBAL
    closing = p.feed(f"value</{'local' if 'local' in tag else 'focus'}>", 4)
    if tag.endswith("/>"):  # a self-closing tag opened nothing: its close is stray
        assert [e.kind for e in closing] == ["stray_close"]
    else:  # the failed region closes quietly: there is nothing to leave
        assert closing == []
    assert p.current == GLOBAL


def test_unknown_chunks_are_dropped_and_the_rest_applied():
    p = DAParser(5)
    (ev,) = p.feed('<focus magic_chunks="2,9,4-7">', 0)
    assert ev.kind == "unknown_section" and ev.dropped_sections == (9, 7)
    assert ev.directive == F((2, 2), (4, 7), (9, 9)) and ev.applied == F((2, 2), (4, 5))
    assert p.current == F((2, 2), (4, 5))
    (ev,) = p.feed("</focus>", 1)
    assert ev.ok and p.current == GLOBAL
    (ev,) = p.feed('<focus magic_chunks="0-9">', 2)
    assert ev.kind == "unknown_section" and p.current == F((1, 5))
    p.feed("</focus>", 3)
    (ev,) = p.feed('<focus magic_chunks="6,99999999999999999999">', 4)
    assert ev.kind == "unknown_section" and p.current == GLOBAL


def test_without_a_chunk_count_any_number_is_accepted():
    p = DAParser()
    p.feed('<focus magic_chunks="40-41">', 0)
    assert p.current == F((40, 41))
    p.feed("</focus>", 1)
    (ev,) = p.feed('<focus magic_chunks="1-99999999">', 2)
    assert ev.kind == "garbage" and p.current == GLOBAL


def test_nested_tags_fall_back_to_global_and_close_quietly():
    p = DAParser(12)
    p.feed('<local>plan <focus magic_chunks="3">', 0)
    assert [e.kind for e in p.events] == ["directive", "nested"]
    assert p.current == GLOBAL
    assert p.feed("v</focus> more </local>", 1) == []
    assert p.current == GLOBAL
    (ev,) = p.feed('<focus magic_chunks="3">', 2)  # a fresh region works again
    assert ev.ok and p.current == F((3, 3))


def test_a_closing_tag_without_an_opening_one():
    p = DAParser(12)
    (ev,) = p.feed("text </focus>", 0)
    assert ev.kind == "stray_close" and p.current == GLOBAL
    p.feed("<local>", 1)
    (ev,) = p.feed("</focus>", 2)  # the wrong close ends the open region too
    assert ev.kind == "stray_close" and p.current == GLOBAL
    (ev,) = p.feed("</local>", 3)
    assert ev.kind == "stray_close"


def test_unclosed_region_at_the_end():
    p = DAParser(12)
    p.feed('<focus magic_chunks="2">value without end', 0)
    assert p.current == F((2, 2))
    (ev,) = p.finish(1)
    assert ev.kind == "unclosed" and ev.step == 1 and p.current == GLOBAL
    assert p.feed("<local>", 2) == [] and p.finish(3) == []


def test_generation_ending_inside_a_tag():
    p = DAParser(12)
    p.feed('<local>x</local> <focus magic_chunks="2"', 0)
    assert p.current == GLOBAL
    (ev,) = p.finish(1)
    assert ev.kind == "unclosed" and p.current == GLOBAL
    q = DAParser(12)
    q.feed("the end is <foc", 0)
    assert q.finish(1) == []  # could have been any word


@pytest.mark.parametrize("text", [
    "<global>", "</global>", "<answer>42</answer>", "<global/>", "<think>hmm</think>",
    "x < 3 and y > 2", "a<b>c", "<3 <<>> <>", "<focus_area>", "</focused>", "<localize>",
    "[[focus S2]]", "<" + "focus " + "x" * 200 + ">",
])
def test_structure_and_plain_text_make_no_event(text):
    p = DAParser(12)
    assert p.feed(text, 0) == [] and p.finish(1) == [] and p.current == GLOBAL


def test_a_stray_less_than_does_not_swallow_the_next_tag():
    p = DAParser(12)
    p.feed('if a < b then <focus magic_chunks="4">', 0)
    assert p.current == F((4, 4))
    p.feed("</focus> and 2<", 1)
    p.feed("local>", 2)
    assert p.current == LOCAL


def test_long_would_be_tag_is_text_however_it_is_split():
    text = "<focus " + "y" * 200 + '> <focus magic_chunks="3">'
    for cuts in [(), (5,), (100,), tuple(range(1, len(text), 7))]:
        p = run(text, cuts=cuts)
        assert summary(p)[:1] == [("directive", '<focus magic_chunks="3">', F((3, 3)))]


def test_feeding_after_finish_does_nothing():
    p = DAParser(3)
    p.finish(0)
    assert p.feed("<local>", 1) == [] and p.current == GLOBAL and p.events == []
