"""A needle task in words the suite never uses: how far a model's retrieval reaches beyond the
wording it was trained on.

    python bench/reworded_niah.py --out runs/reworded.jsonl --n 20 --words 1500
    dac eval --model MODEL --source jsonl --data runs/reworded.jsonl --arms brackets/full,brackets/dac \\
        --samples 20 --out runs/reworded-eval

The suite's needles read "The special magic number for KEY is: N." and its questions "What is
the special magic number for KEY ...". Here each needle is one of several other phrasings
("KEY's locker combination is N", "Remember: the code that opens KEY is N"), in a haystack of
State of the Union prose from a speech chosen at random, and the question is phrased another
way again. The file is in the generic ``jsonl`` source layout (:mod:`dac.eval.sources`).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from dac.tasks.reworded import HELD_OUT_WORDINGS
from dac.tasks.sources import distinct_keys, number, prose

NEEDLES = list(HELD_OUT_WORDINGS)


def make(n: int, words: int, seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        key = distinct_keys(rng, 1)[0]
        value = number(rng)
        needle, question = rng.choice(NEEDLES)
        hay = prose(rng.random(), words)
        at = rng.randrange(len(hay) + 1)
        hay.insert(at, needle.format(key=key, value=value))
        out.append({"id": f"reworded-{i}", "context": " ".join(hay),
                    "question": question.format(key=key), "answers": [value]})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--words", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    with a.out.open("w") as f:
        for row in make(a.n, a.words, a.seed):
            f.write(json.dumps(row) + "\n")
    print(f"wrote {a.n} examples to {a.out}")


if __name__ == "__main__":
    main()
