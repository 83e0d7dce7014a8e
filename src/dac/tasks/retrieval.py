"""Single-region retrieval: the answer sits in one place (one needle among a haystack).

Needle template and keys follow RULER: "One of the special magic numbers for {key} is: {value}."
with adjective-noun keys, 7-digit numbers or UUID values.
"""

from __future__ import annotations

import random

from . import sources as src
from .core import Draft, insert_at_depths

KINDS = {"number": "numbers", "uuid": "uuids", "word": "words"}


def needle(key: str, value: str, kind: str = "number") -> str:
    return f"One of the special magic {KINDS[kind]} for {key} is: {value}."


def value_span(text: str, value: str) -> tuple[int, int]:
    a = text.rindex(value)
    return a, a + len(value)


def lead(key: str, kind: str = "number") -> str:
    """The answer's lead: the needle's words before the value, with the question's noun."""
    return f"The special magic {kind} for {key} is: "


def question(key: str, kind: str = "number") -> str:
    return (f"What is the special magic {kind} for {key} mentioned in the provided text? "
            f"Answer with the {kind} only.")


def _single(rng: random.Random, n: int, haystack: str, kind: str) -> Draft:
    key = src.distinct_keys(rng, 1)[0]
    value = src.uuid4(rng) if kind == "uuid" else src.number(rng)
    depth = rng.random()
    start = rng.random()
    filler = src.noise(n) if haystack == "noise" else src.prose(start, n)
    text = needle(key, value, kind)
    units, (at,) = insert_at_depths(filler, [text], [depth])
    return Draft(units, [(at, 0, len(text))], question(key, kind), [value], value,
                 lead=lead(key, kind))


def niah_single_noise(rng: random.Random, n: int, length: int) -> Draft:
    """One number needle in the repeated-sentence noise haystack."""
    return _single(rng, n, "noise", "number")


def niah_single_prose(rng: random.Random, n: int, length: int) -> Draft:
    """One number needle in a prose haystack (speech sentences)."""
    return _single(rng, n, "prose", "number")


def niah_single_uuid(rng: random.Random, n: int, length: int) -> Draft:
    """One UUID needle in a prose haystack."""
    return _single(rng, n, "prose", "uuid")


def niah_multikey(rng: random.Random, n: int, length: int) -> Draft:
    """One target needle among three distractor needles with other keys (prose haystack)."""
    keys = src.distinct_keys(rng, 4)
    values = src.distinct_numbers(rng, 4)
    depths = [rng.random() for _ in keys]
    filler = src.prose(rng.random(), n)
    texts = [needle(k, v) for k, v in zip(keys, values)]
    units, pos = insert_at_depths(filler, texts, depths)
    return Draft(units, [(pos[0], 0, len(texts[0]))], question(keys[0]), [values[0]], values[0],
                 lead=lead(keys[0]))


def niah_multikey_dense(rng: random.Random, n: int, length: int) -> Draft:
    """The haystack is all needles: UUID keys to UUID values; ``n`` distractor needles."""
    target_key, target_val = src.uuid4(rng), src.uuid4(rng)
    depth = rng.random()
    texts = [needle(src.uuid4(rng), src.uuid4(rng), "uuid") for _ in range(n)]
    t = needle(target_key, target_val, "uuid")
    units, (at,) = insert_at_depths(texts, [t], [depth])
    return Draft(units, [(at, 0, len(t))], question(target_key, "uuid"), [target_val],
                 target_val, lead=lead(target_key, "uuid"))


def kv_json(rng: random.Random, n: int, length: int) -> Draft:
    """A JSON object of UUID keys and values; ``n`` distractor pairs around the queried one."""
    key, val = src.uuid4(rng), src.uuid4(rng)
    depth = rng.random()
    lines = [f'"{src.uuid4(rng)}": "{src.uuid4(rng)}",' for _ in range(n)]
    t = f'"{key}": "{val}",'
    units, (at,) = insert_at_depths(lines, [t], [depth])
    q = (f'The document is a JSON object of key-value pairs. What is the value associated '
         f'with the key "{key}"? Answer with the value only.')
    return Draft(units, [(at, 0, len(t))], q, [val], val, joiner="\n", lead=f'"{key}": "')


#: Depths of the passkey grid (drawn per sample).
PASSKEY_DEPTHS = [(i + 0.5) / 10 for i in range(10)]


def passkey(rng: random.Random, n: int, length: int) -> Draft:
    """The classic pass key in the noise haystack, at a depth on a 10-point grid."""
    key = src.number(rng, 5)
    grid = rng.randrange(len(PASSKEY_DEPTHS))
    text = f"The pass key is {key}. Remember it. {key} is the pass key."
    units, (at,) = insert_at_depths(src.noise(n), [text], [PASSKEY_DEPTHS[grid]])
    return Draft(units, [(at, 0, len(text))],
                 "What is the pass key? Answer with the number only.", [key], key,
                 lead="The pass key is ")
