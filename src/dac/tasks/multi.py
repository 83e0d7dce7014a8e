"""Multi-region tasks: the answer needs several places of the context, but not all of it."""

from __future__ import annotations

import random
import string

from . import sources as src
from .core import Draft, insert_at_depths
from .retrieval import needle


def _spread(rng: random.Random, k: int) -> list[float]:
    """``k`` depths, one in each of ``k`` equal slices of the context (so they spread out)."""
    return [(i + rng.random()) / k for i in range(k)]


def niah_multivalue(rng: random.Random, n: int, length: int) -> Draft:
    """Four values of one key, spread through a prose haystack; all four are asked."""
    key = src.distinct_keys(rng, 1)[0]
    values = src.distinct_numbers(rng, 4)
    depths = _spread(rng, 4)
    filler = src.prose(rng.random(), n)
    texts = [needle(key, v) for v in values]
    units, pos = insert_at_depths(filler, texts, depths)
    q = (f"What are all the special magic numbers for {key} mentioned in the provided text? "
         "Answer with the numbers only, separated by commas.")
    return Draft(units, [(p, 0, len(t)) for p, t in zip(pos, texts)], q, values,
                 ", ".join(values), hops=list(enumerate(values)))


def niah_multiquery(rng: random.Random, n: int, length: int) -> Draft:
    """Four keys with one value each, spread through a prose haystack; all four are asked."""
    keys = src.distinct_keys(rng, 4)
    values = src.distinct_numbers(rng, 4)
    depths = _spread(rng, 4)
    rng.shuffle(depths)
    filler = src.prose(rng.random(), n)
    texts = [needle(k, v) for k, v in zip(keys, values)]
    units, pos = insert_at_depths(filler, texts, depths)
    q = (f"What are the special magic numbers for {', '.join(keys[:-1])} and {keys[-1]} "
         "mentioned in the provided text? Answer with the numbers only, in that order, "
         "separated by commas.")
    return Draft(units, [(p, 0, len(t)) for p, t in zip(pos, texts)], q, values,
                 ", ".join(values), hops=list(enumerate(values)))


def _var(rng: random.Random, taken: set[str]) -> str:
    while True:
        v = "".join(rng.choice(string.ascii_uppercase) for _ in range(5))
        if v not in taken:
            taken.add(v)
            return v


def variable_tracking(rng: random.Random, n: int, length: int) -> Draft:
    """RULER's variable tracking: a chain of 4 hops from a value, plus a distractor chain."""
    taken: set[str] = set()
    value, other = src.distinct_numbers(rng, 2, 5)
    chain = [_var(rng, taken) for _ in range(5)]
    decoy = [_var(rng, taken) for _ in range(3)]
    texts = [f"VAR {chain[0]} = {value}."] + [
        f"VAR {chain[i]} = VAR {chain[i - 1]}." for i in range(1, len(chain))]
    dtexts = [f"VAR {decoy[0]} = {other}."] + [
        f"VAR {decoy[i]} = VAR {decoy[i - 1]}." for i in range(1, len(decoy))]
    depths = sorted(_spread(rng, len(texts)))
    ddepths = sorted(rng.random() for _ in dtexts)
    units, pos = insert_at_depths(src.noise(n), texts + dtexts, depths + ddepths)
    q = (f"Find all variables that are assigned the value {value} in the text above, directly "
         "or through other variables. Answer with the variable names, separated by commas.")
    ev = [(p, 0, len(t)) for p, t in zip(pos[:len(texts)], texts)]
    return Draft(units, ev, q, chain, ", ".join(chain), hops=list(enumerate(chain)),
                 hop_keys=[f"{value} "])


def chained_facts(rng: random.Random, n: int, length: int) -> Draft:
    """A three-hop chain ("X has the same code as Y", ..., "the code of Z is V") in prose,
    with direct decoy facts about other keys; the question names the first key."""
    keys = src.distinct_keys(rng, 5)
    value, *others = src.distinct_numbers(rng, 3)
    a, b, c, d1, d2 = keys
    texts = [f"The secret code of the {a} is the same as the secret code of the {b}.",
             f"The secret code of the {b} is the same as the secret code of the {c}.",
             f"The secret code of the {c} is {value}."]
    decoys = [f"The secret code of the {d1} is {others[0]}.",
              f"The secret code of the {d2} is {others[1]}."]
    depths = _spread(rng, 3)
    rng.shuffle(depths)  # the chain is not in reading order
    ddepths = [rng.random(), rng.random()]
    units, pos = insert_at_depths(src.prose(rng.random(), n), texts + decoys, depths + ddepths)
    q = f"What is the secret code of the {a}? Answer with the number only."
    return Draft(units, [(p, 0, len(t)) for p, t in zip(pos[:3], texts)], q, [value], value,
                 hops=[(0, f"the {b}"), (1, f"the {c}"), (2, value)])


ACTORS = ("Mary", "John", "Sandra", "Daniel", "Alice", "Bob", "Fred", "Julie")
ROOMS = ("kitchen", "garden", "hallway", "office", "bedroom", "bathroom", "cellar", "attic")
OBJECTS = ("football", "apple", "milk", "lantern", "key", "umbrella")


def world_state(rng: random.Random, n: int, length: int) -> Draft:
    """A bAbI-style world (qa2): people move between rooms; one picks up an object and moves
    on. "Where is the object?" needs the pick-up fact and that person's last move."""
    actors = rng.sample(ACTORS, 4)
    holder = actors[0]
    obj = rng.choice(OBJECTS)
    events: list[tuple[str, str]] = []  # (actor, text)
    where: dict[str, str] = {}
    for _ in range(10):
        who = rng.choice(actors)
        room = rng.choice([r for r in ROOMS if r != where.get(who)])
        where[who] = room
        events.append((who, f"{who} went to the {room}."))
    pick_at = rng.randrange(3, 7)
    events.insert(pick_at, (holder, f"{holder} picked up the {obj}."))
    # make sure the holder moves after the pick-up
    last_room = rng.choice([r for r in ROOMS if r != where.get(holder)])
    events.insert(rng.randrange(pick_at + 1, len(events) + 1),
                  (holder, f"{holder} went to the {last_room}."))
    final = None
    for i, (who, text) in enumerate(events):
        if who == holder and i > pick_at and "went to" in text:
            final = i
    answer = events[final][1].rsplit(" ", 1)[1].rstrip(".")
    texts = [t for _, t in events]
    depths = sorted(rng.random() for _ in texts)
    units, pos = insert_at_depths(src.prose(rng.random(), n), texts, depths)
    q = f"Where is the {obj} at the end of the story? Answer with the room only."
    ev = [(pos[pick_at], 0, len(texts[pick_at])), (pos[final], 0, len(texts[final]))]
    return Draft(units, ev, q, [answer], f"the {answer}",
                 hops=[(0, holder), (1, f"the {answer}")], scan_last=True,
                 hop_keys=[f"the {obj} ", f"{holder} went to "])
