"""The Protocol interface and registry; the brackets wrapper and the vanilla baseline."""

from __future__ import annotations

from pathlib import Path

import pytest

from dac.models import tiny_tokenizer
from dac.protocol import (
    GLOBAL,
    PROTOCOLS,
    BracketsProtocol,
    DAParser,
    DAProtocol,
    Protocol,
    PromptLayout,
    StreamingParser,
    VanillaParser,
    VanillaProtocol,
    build_prompt,
    extract_answer,
    get_protocol,
    split_sections,
    strip_directives,
)
from dac.protocol.base import SlotError, fill_slots, slot

TEMPLATES = Path(__file__).parent / "templates"
DOC = "\n\n".join(f"Section {i}: the river runs north past mill {i}. " * 3 for i in range(12))
QUESTION = "Which way does the river run?"


@pytest.fixture(scope="module")
def chat_tok():
    tok = tiny_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = (TEMPLATES / "qwen3.jinja").read_text()
    return tok


def test_registry():
    assert set(PROTOCOLS) == {"brackets", "da", "vanilla"}
    assert isinstance(get_protocol("brackets"), BracketsProtocol)
    assert isinstance(get_protocol("da"), DAProtocol)
    assert isinstance(get_protocol("vanilla"), VanillaProtocol)
    for p in PROTOCOLS.values():
        assert isinstance(p, Protocol) and PROTOCOLS[p.name] is p
        assert isinstance(p.instruction, str) and p.instruction


@pytest.mark.parametrize("name", ["", "DA", "focus", "brackets ", None])
def test_unknown_protocol_names_list_the_known_ones(name):
    with pytest.raises(ValueError, match="brackets, da, vanilla"):
        get_protocol(name)


def test_layouts_default_to_brackets():
    lay = PromptLayout.plain(10, [(2, 5)])
    assert lay.protocol == "brackets" and lay.delivery == ""


@pytest.mark.parametrize("templated", [False, True])
def test_brackets_prompt_is_byte_identical(tokenizer, chat_tok, templated):
    tok = chat_tok if templated else tokenizer
    p = get_protocol("brackets")
    want = build_prompt(tok, split_sections(DOC), QUESTION)
    got = p.build_prompt(tok, DOC, QUESTION)
    assert got == want and got.text == want.text and got.offsets == want.offsets
    assert got.section_chars == want.section_chars and got.protocol == "brackets"
    items = ["First passage.", "Second passage, longer.", "Third."]
    assert p.build_prompt(tok, items, QUESTION) == build_prompt(tok, items, QUESTION)
    assert p.build_prompt(tok, tuple(items), QUESTION, question_first=True) == build_prompt(
        tok, items, QUESTION, question_first=True)
    assert p.build_prompt(tok, DOC, QUESTION, max_chars=200) == build_prompt(
        tok, split_sections(DOC, 200), QUESTION)


def test_brackets_parser_and_answer(tokenizer):
    p = get_protocol("brackets")
    lay = p.build_prompt(tokenizer, DOC, QUESTION)
    parser = get_protocol(lay.protocol).parser(lay)
    assert isinstance(parser, StreamingParser) and parser.num_sections == lay.num_sections
    parser.feed("[[focus S2]] north", 0)
    assert parser.current.sections() == [2]
    text = "[[focus S2]] It runs north. [[global]]"
    assert p.answer(text) == strip_directives(text) == "It runs north."


def test_each_layout_picks_its_own_parser(chat_tok):
    kinds = {"brackets": StreamingParser, "da": DAParser, "vanilla": VanillaParser}
    for name, cls in kinds.items():
        lay = get_protocol(name).build_prompt(chat_tok, DOC, QUESTION)
        assert lay.protocol == name
        parser = get_protocol(lay.protocol).parser(lay)
        assert isinstance(parser, cls) and parser.current == GLOBAL and parser.events == []


@pytest.mark.parametrize("templated", [False, True])
def test_vanilla_puts_the_raw_context_inline(tokenizer, chat_tok, templated):
    tok = chat_tok if templated else tokenizer
    lay = get_protocol("vanilla").build_prompt(tok, DOC, QUESTION)
    assert lay.protocol == "vanilla" and lay.delivery == "inline"
    assert DOC in lay.text and "Magic Chunk" not in lay.text and "<tool_call>" not in lay.text
    assert lay.num_sections == 1 and lay.text[slice(*lay.section_chars[0])] == DOC
    span = lay.sections[0]
    assert DOC in tok.decode(lay.input_ids[span.start:span.end])
    assert lay.preamble.end == span.start and lay.protected[0].end == lay.prompt_len
    tail = tok.decode(lay.input_ids[lay.protected[0].start:])
    assert QUESTION in tail and "step by step" in tail and "<answer>...</answer>" in tail
    if templated:
        assert lay.text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_vanilla_list_context_and_thinking(chat_tok):
    items = ["Turn one: hello.", "Turn two: the river runs north.", ""]
    p = get_protocol("vanilla")
    lay = p.build_prompt(chat_tok, items, QUESTION)
    assert lay.num_sections == 3
    assert [lay.text[a:b] for a, b in lay.section_chars][:2] == items[:2]
    assert p.build_prompt(chat_tok, items, QUESTION, thinking=True).text.endswith(
        "<|im_start|>assistant\n")
    with pytest.raises(ValueError, match="question"):
        p.build_prompt(chat_tok, items, "")


def test_vanilla_parser_never_changes_mode():
    parser = VanillaParser()
    for step, delta in enumerate(['<focus magic_chunks="2">', "x</focus>", "<local>", "[[local]]"]):
        assert parser.feed(delta, step) == [] and parser.current == GLOBAL
    assert parser.finish(9) == [] and parser.events == []


@pytest.mark.parametrize("text, answer", [
    ("<local>It is 8.</local>\n<answer>8 years</answer>", "8 years"),
    ("<answer>draft</answer> then <answer> final </answer>", "final"),
    ("<ANSWER>B</Answer>", "B"),
    ("<answer>\nThe council met.\nIt voted.\n</answer>\n", "The council met.\nIt voted."),
    ("<local>done</local><answer>cut off by the token lim", "cut off by the token lim"),
    ("<answer>a</answer> more <answer>unfinished", "a"),  # a closed answer wins
    ('<global>plan</global> <focus magic_chunks="2">4711</focus> no tags', "plan 4711 no tags"),
    ("just text", "just text"),
    ("<answer><focus magic_chunks='1'>x</focus></answer>", "x"),
    ("", ""),
])
def test_answer_extraction(text, answer):
    assert extract_answer(text) == answer
    assert get_protocol("da").answer(text) == answer == get_protocol("vanilla").answer(text)


def test_slots_are_filled_at_the_rendered_positions():
    rendered = f"head {slot('a')} mid {slot('b')} tail"
    text, ranges = fill_slots(rendered, {"b": "B " + slot("a"), "a": "A text"})
    assert text == f"head A text mid B {slot('a')} tail"
    assert text[slice(*ranges["a"])] == "A text" and text[slice(*ranges["b"])] == "B " + slot("a")
    with pytest.raises(SlotError):
        fill_slots(rendered, {"c": "x"})
    with pytest.raises(SlotError):
        fill_slots(rendered + slot("a"), {"a": "x"})
