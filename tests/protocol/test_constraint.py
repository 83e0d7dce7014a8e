"""Section-bounded decoding: which added tokens name sections, and which a prompt bans."""

from __future__ import annotations

import copy

import pytest

from dac.planning import get_policy
from dac.protocol import PromptLayout, StreamingParser
from dac.protocol.constraint import (
    banned_token_ids,
    piece_sections,
    section_bans,
    section_tokens,
)


def ids(tok, texts):
    return {tok.convert_tokens_to_ids(t) for t in texts}


def pieces(k):
    return [f"[[focus S{k}]]", f"[[focus S{k}", f", S{k}", f"-S{k}"]


@pytest.mark.parametrize("text,want", [
    ("[[focus S3]]", (3, 3)), ("[[focus S3", (3, 3)), (", S3", (3, 3)), ("-S3", (3, 3)),
    ("[[focus S128]]", (128, 128)), ("[[FOCUS s7]]", (7, 7)), ("[[focus S2-S4]]", (2, 4)),
    (", S2-S4", (2, 4)), ("[[focus S0]]", (0, 0)),
    ("[S3]", None), ("[[global]]", None), ("[[local]]", None), ("]]", None), ("S3", None),
    ("focus", None), ("[[focus", None), ("3", None), (", 3", None),
])
def test_piece_sections(text, want):
    assert piece_sections(text) == want


def test_banned_ids_of_a_protocol_tokenizer(protocol_tokenizer):
    tok = protocol_tokenizer
    st = section_tokens(tok)
    assert set(st.pieces) == ids(tok, [p for k in range(1, 13) for p in pieces(k)])
    assert banned_token_ids(tok, 8) == ids(tok, [p for k in range(9, 13) for p in pieces(k)])
    assert banned_token_ids(tok, 12) == frozenset()
    assert banned_token_ids(tok, 1) == ids(tok, [p for k in range(2, 13) for p in pieces(k)])
    assert banned_token_ids(tok, 0) == frozenset(st.pieces)  # no section: no focus is valid
    keep = ids(tok, [f"[S{k}]" for k in range(1, 13)] + ["[[global]]", "[[local]]", "]]"])
    assert not keep & banned_token_ids(tok, 0)  # markers and other directives: never


def test_banned_pieces_are_exactly_the_ones_the_parser_would_drop(protocol_tokenizer):
    """Each piece, completed into a directive: banned iff the parser reports an unknown section."""
    tok, n = protocol_tokenizer, 5
    banned = banned_token_ids(tok, n)
    assert banned
    for tid in section_tokens(tok).pieces:
        text = tok.convert_ids_to_tokens(tid)
        if text.endswith("]]"):
            directive = text
        elif text.startswith("[["):
            directive = text + "]]"
        else:
            directive = f"[[focus S1{text}]]"  # ", S9" -> "[[focus S1, S9]]"; "-S9" -> S1-S9
        p = StreamingParser(n)
        (ev,) = p.feed(directive, 0)
        assert (ev.kind == "unknown_section") == (tid in banned), directive


def test_cached_per_tokenizer_and_refreshed_when_tokens_are_added(protocol_tokenizer):
    tok = copy.deepcopy(protocol_tokenizer)
    first = section_tokens(tok)
    assert section_tokens(tok) is first
    assert banned_token_ids(tok, 12) == frozenset()
    tok.add_tokens(["[[focus S13]]"])
    assert section_tokens(tok) is not first
    assert banned_token_ids(tok, 12) == ids(tok, ["[[focus S13]]"])


def test_text_spelled_directives_ban_nothing(tokenizer):
    """A tokenizer without directive tokens (like a stock Qwen one): nothing to bound."""
    assert "[[focus S9]]" in tokenizer.decode(tokenizer("[[focus S9]]")["input_ids"])
    assert section_tokens(tokenizer).pieces == {}
    assert banned_token_ids(tokenizer, 2) == frozenset()
    lay = PromptLayout.plain(64, [(0, 10), (10, 20)])
    assert section_bans(tokenizer, [lay]) is None


def test_section_bans_per_prompt(protocol_tokenizer):
    tok = protocol_tokenizer
    lays = [PromptLayout.plain(64, [(i, i + 1) for i in range(n)]) for n in (8, 12, 3)]
    bans = section_bans(tok, lays)
    assert bans == [banned_token_ids(tok, 8), frozenset(), banned_token_ids(tok, 3)]
    assert section_bans(tok, lays, enabled=False) is None
    assert section_bans(tok, lays[1:2]) is None  # nothing to ban in any row


def test_only_policies_that_read_directives_are_bounded():
    assert get_policy("dac").reads_directives
    assert get_policy("dac+safety").reads_directives
    assert get_policy("quest+safety").reads_directives  # the net watches the directive
    for name in ("full", "streaming", "quest", "oracle"):
        assert not get_policy(name).reads_directives, name


def test_only_brackets_prompts_are_bounded(protocol_tokenizer):
    """A da prompt writes its chunk numbers as ordinary text: nothing to ban, even with a
    tokenizer that has bracket directive tokens."""
    from dac.protocol.base import get_protocol

    tok = protocol_tokenizer
    secs = [f"the river {i} runs past the mill" for i in range(4)]
    brackets = get_protocol("brackets").build_prompt(tok, secs, "Which?")
    da = get_protocol("da").build_prompt(tok, secs, "Which?")
    bans = section_bans(tok, [brackets, da])
    assert bans is not None and bans[0] and not bans[1]
    assert section_bans(tok, [da]) is None
