"""Global aggregation: the answer depends on the whole context (counts, frequencies, extremes)."""

from __future__ import annotations

import random
import string

from . import sources as src
from .core import Draft


def _word_list(words: list[str]) -> tuple[list[str], list[tuple[int, int, int]]]:
    """Numbered list units ``"12. river"``; returns units and per-unit word span."""
    units = [f"{i}. {w}" for i, w in enumerate(words, 1)]
    spans = [(i, len(u) - len(w), len(u)) for i, (u, w) in enumerate(zip(units, words))]
    return units, spans


def common_words(rng: random.Random, n: int, length: int) -> Draft:
    """RULER's common words extraction: a few words repeated often among ``n`` rare words."""
    k = 10 if length >= 4096 else 5
    freq = max(4, min(30, length // 512))
    rare_freq = max(1, min(3, freq // 3))
    vocab = src.distinct_words(rng, k + 1)
    common = vocab[:k]
    pool = src.nouns()
    rare: list[str] = []
    seen = set(vocab)
    while len(rare) < n:
        w = rng.choice(pool)
        if w not in seen:
            seen.add(w)
            rare.append(w)
    words = common * freq + rare * rare_freq
    rng.shuffle(words)
    units, spans = _word_list(words)
    ev = [s for s, w in zip(spans, words) if w in set(common)]
    q = (f"Above is a numbered list of words. What are the {k} most common words in the list? "
         "Answer with the words only, separated by commas.")
    return Draft(units, ev, q, common, ", ".join(common), joiner="\n")


def _coded(rng: random.Random, taken: set[str]) -> str:
    while True:
        w = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(4, 6)))
        if w not in taken:
            taken.add(w)
            return w


def frequent_words(rng: random.Random, n: int, length: int) -> Draft:
    """RULER's frequent words extraction: coded words with Zipf frequencies; the top three."""
    taken: set[str] = set()
    total = n + 60
    alpha = 2.0
    vocab_size = max(8, total // 20)
    weights = [1 / (r ** alpha) for r in range(1, vocab_size + 1)]
    z = sum(weights)
    counts = [max(1, round(total * w / z)) for w in weights]
    for i in range(1, 4):  # strictly decreasing head: the top three are unambiguous
        counts[i] = min(counts[i], counts[i - 1] - 1)
    counts = [max(1, c) for c in counts]
    vocab = [_coded(rng, taken) for _ in counts]
    words = [w for w, c in zip(vocab, counts) for _ in range(c)]
    rng.shuffle(words)
    top = vocab[:3]
    ev = []
    units = [" ".join(words[i:i + 10]) + "." for i in range(0, len(words), 10)]
    for u_idx, u in enumerate(units):
        off = 0
        for w in u.rstrip(".").split(" "):
            if w in top:
                ev.append((u_idx, off, off + len(w)))
            off += len(w) + 1
    q = ("Above is a text of coded words. What are the three most frequently appearing coded "
         "words in it? Answer with the three words only, most frequent first, separated by "
         "commas.")
    return Draft(units, ev, q, top, ", ".join(top))


def passage_count(rng: random.Random, n: int, length: int) -> Draft:
    """How many distinct passages: prose passages of which some appear several times.

    Passages are ``P`` words (longer for longer contexts); ``n`` words of passages are shown,
    about two thirds of them distinct."""
    size = max(10, min(120, length // 60))
    shown = 2 + n // size
    ratio = rng.uniform(0.5, 0.8)
    distinct = max(1, min(shown, round(shown * ratio)))
    words = " ".join(src.prose(rng.random(), distinct * size)).split()
    paras = [" ".join(words[i * size:(i + 1) * size]).rstrip(",;:.") + "."
             for i in range(distinct)]
    order = list(range(distinct)) + [rng.randrange(distinct) for _ in range(shown - distinct)]
    rng.shuffle(order)
    units = [f"Passage {j}: {paras[p]}" for j, p in enumerate(order, 1)]
    q = ("The document holds numbered passages, some of which repeat others word for word. "
         "How many distinct passages are there? Answer with the number only.")
    ev = [(u, 0, len(t)) for u, t in enumerate(units)]
    return Draft(units, ev, q, [str(distinct)], str(distinct), joiner="\n")


def math_find(rng: random.Random, n: int, length: int) -> Draft:
    """The largest or smallest number of a long comma-separated list (it appears once)."""
    op = rng.choice(["largest", "smallest"])
    count = n // 2 + 8
    nums = [rng.randrange(100, 10000) for _ in range(count)]
    target = 10000 + rng.randrange(0, 90000) if op == "largest" else rng.randrange(0, 100)
    at = rng.randrange(count + 1)
    nums.insert(at, target)
    units = [f"{x}," for x in nums]
    q = (f"Above is a list of numbers. What is the {op} number in the list? "
         "Answer with the number only.")
    return Draft(units, [(at, 0, len(units[at]) - 1)], q, [str(target)], str(target))


def counting_stars(rng: random.Random, n: int, length: int) -> Draft:
    """Counting-Stars (acquisition): a penguin counts stars in sentences spread through prose;
    list every count in order."""
    k = 4 if length < 8192 else 8
    counts = [str(c) for c in rng.sample(range(2, 200), k)]
    texts = [f"The little penguin counted {c} stars." for c in counts]
    depths = [(i + rng.random()) / k for i in range(k)]
    from .core import insert_at_depths

    units, pos = insert_at_depths(src.prose(rng.random(), n), texts, depths)
    q = ("The little penguin counted stars several times in the document. List every number "
         "of stars it counted, in order, separated by commas.")
    return Draft(units, [(p, 0, len(t)) for p, t in zip(pos, texts)], q, counts,
                 ", ".join(counts))
