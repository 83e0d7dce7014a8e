"""Magic-chunk segmentation: lossless, sized by tokens, cut at the coarsest boundary."""

from __future__ import annotations

import bisect
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dac.protocol.chunks import EMPTY_CHUNK, segment, segment_spans


def counter(tok, text):
    """Tokens per character range, counted the way the segmenter defines it."""
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    starts = sorted(s for s, _ in enc["offset_mapping"])
    return lambda a, b: bisect.bisect_left(starts, b) - bisect.bisect_left(starts, a)


def check(tok, text, target, cap):
    """The properties every segmentation has; returns the spans."""
    spans = segment_spans(text, tok, target, cap)
    chunks = segment(text, tok, target, cap)
    if not text.strip():
        assert spans == [] and chunks == [EMPTY_CHUNK]
        return spans
    assert "".join(chunks) == text
    assert [text[a:b] for a, b in spans] == chunks
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(a < b for a, b in spans)
    assert all(x[1] == y[0] for x, y in zip(spans, spans[1:]))
    for c in chunks:
        c.encode("utf-8")  # no lone surrogate
        assert "\ufffd" not in c or "\ufffd" in text
    # every cut falls right after whitespace, so never inside a word (nor a multibyte char)
    assert all(c[-1].isspace() for c in chunks[:-1])
    count = counter(tok, text)
    for (a, b), c in zip(spans, chunks):
        if count(a, b) > cap:  # only an unsplittable run may exceed the cap
            assert not re.search(r"\s", c.rstrip()), c[:80]
    return spans


ADVERSARIAL = {
    "accents": "héllo wörld, ça va? naïve façade. " * 200,
    "emoji": "I 😀 this 👍🏽 family 👨‍👩‍👧‍👦 and 🇯🇵 flag. " * 150,
    "cjk_spaced": "世界 你好。 東京 は 大きい。 " * 300,
    "cjk_unspaced": "世界你好。東京は大きい。" * 300,
    "no_whitespace": "x" * 6000,
    "base64_blob": "intro text. " * 20 + "QUJD" * 2000 + " outro text. " * 20,
    "tag_like": 'see <focus magic_chunks="3">value</focus> and </local> <answer>x</answer> ' * 100,
    "long_line": "word " * 5000,
    "crlf": "line one\r\nline two\r\n\r\nnew para\r\n" * 200,
    "tabs_and_nbsp": "a\tb\u00a0c\u2003d e\n" * 400,
    "combining": "e\u0301 a\u0308 n\u0303. " * 500,
    "empty": "",
    "spaces": "   ",
    "newlines": "\n\n\t \n",
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_lossless_on_adversarial_text(tokenizer, name):
    text = ADVERSARIAL[name]
    for target, cap in [(32, 48), (200, 256), (2048, 2560)]:
        check(tokenizer, text, target, cap)


def test_empty_and_blank_contexts_become_the_placeholder(tokenizer):
    for text in ["", " ", "\n\n", "\t\r\n "]:
        assert segment(text, tokenizer) == [EMPTY_CHUNK]
    assert EMPTY_CHUNK.strip()


def test_a_whitespace_free_run_is_never_cut(tokenizer):
    text = "short words here. " * 10 + "Z" * 3000 + " tail words."
    chunks = segment(text, tokenizer, target=20, cap=30)
    blob = [c for c in chunks if "Z" in c]
    assert len(blob) == 1 and blob[0].strip() == "Z" * 3000


def test_context_under_the_cap_is_one_chunk(tokenizer):
    text = "The river runs north. " * 10
    n = counter(tokenizer, text)(0, len(text))
    assert segment(text, tokenizer, target=n - 5, cap=n) == [text]
    assert len(segment(text, tokenizer, target=n - 5, cap=n - 1)) > 1


def test_units_pack_greedily_up_to_the_target(tokenizer):
    paras = [f"Paragraph {i} says the river runs north." for i in range(40)]
    text = "\n\n".join(paras)
    count = counter(tokenizer, text)
    target, cap = 60, 80
    spans = segment_spans(text, tokenizer, target, cap)
    assert len(spans) > 1
    for i, (a, b) in enumerate(spans):
        assert count(a, b) <= target
        chunk = text[a:b]
        assert chunk.count("Paragraph") >= 1 and (b == len(text) or chunk.endswith("\n\n"))
        if i + 1 < len(spans):  # the next paragraph would not have fitted
            nxt = text.index("\n\n", b) + 2 if "\n\n" in text[b:] else len(text)
            assert count(a, nxt) > target


@pytest.mark.parametrize("level, text, ending", [
    ("blank line", "\n\n".join(f"Line {i} one.\nLine {i} two, more." for i in range(30)), "\n\n"),
    ("newline", "\n".join(f"Line {i} has a sentence. And, a clause." for i in range(30)), "\n"),
    ("sentence end", " ".join(f"Sentence {i} ends here, a clause; more!" for i in range(30)),
     "! "),
    ("clause end", ", ".join(f"clause {i} goes on and on" for i in range(30)), ", "),
    ("space", " ".join(f"w{i}" for i in range(300)), " "),
])
def test_over_cap_units_split_at_the_coarsest_boundary(tokenizer, level, text, ending):
    """Each unit fits the cap only once cut at ``level``; every cut lands on that boundary."""
    chunks = segment(text, tokenizer, target=30, cap=40)
    assert len(chunks) > 2, level
    assert "".join(chunks) == text
    assert all(c.endswith(ending) for c in chunks[:-1]), [c[-8:] for c in chunks]


def test_a_big_paragraph_is_split_while_its_neighbours_stay_whole(tokenizer):
    small = "A short opening paragraph."
    big = " ".join(f"Sentence number {i} of the long paragraph." for i in range(40))
    text = f"{small}\n\n{big}\n\nA short closing paragraph."
    chunks = segment(text, tokenizer, target=40, cap=60)
    assert "".join(chunks) == text
    assert chunks[0].startswith(small)
    inner = [c for c in chunks if "Sentence" in c]
    assert all(c.endswith((". ", "\n\n")) for c in inner[:-1])


def test_bad_sizes(tokenizer):
    with pytest.raises(ValueError, match="target"):
        segment("text", tokenizer, target=0)
    with pytest.raises(ValueError, match="target"):
        segment("text", tokenizer, target=100, cap=50)


_ALPHABET = st.sampled_from(list("ab xyz.,;:!?\n\n\t") + [
    "é", "😀", "世", "\u0301", "👨‍👩‍👧", "<", ">", '"', "\r\n", "\u00a0"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parts=st.lists(st.one_of(_ALPHABET, st.text(max_size=12)), max_size=300),
       target=st.integers(1, 40), extra=st.integers(0, 20))
def test_segmentation_properties_hold_for_any_text(tokenizer, parts, target, extra):
    check(tokenizer, "".join(parts), target, target + extra)
