"""Where a trained model's focus directives miss, and how often training showed each one.

Reads a model directory's ``eval.json`` (``python -m dac.train.evaluate``) and rebuilds each
DAC record's sample to find the needle's section. Prints, for the single-needle retrieval
tasks, the exact-directive rate by quarter of the context the needle sits in, and by where in
its section it sits (the first fifth of the section's text or later, in the first three
quarters of the context or the last), the offsets of wrong focuses (declared minus ideal section), the highest section declared per length; then,
from the recipe recorded in ``dac_config.json``, the share of single-section focus targets
each section number had in training (every example's context has the suite's
:func:`dac.tasks.core.num_sections`, or a stage's ``sections`` range, and the needle's section
is spread evenly over them).

``python bench/directive_misses.py MODEL_DIR [--eval FILE]``
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

SINGLE = ("passkey", "niah_single_noise", "niah_single_prose", "niah_single_uuid")


def target_shares(meta: dict) -> dict[int, float]:
    """Expected share of each section number among single-section focus targets."""
    from dac.tasks.core import num_sections
    from dac.train.config import TrainConfig

    cfg = TrainConfig.from_dict(meta["config"])
    weight: Counter = Counter()
    for stage, run in zip(cfg.stages, meta["stages"]):
        if stage.kind == "copy":
            continue
        lengths = range(stage.lo, stage.length + 1, 16)
        examples = run["steps"] * run["batch"]
        for length in lengths:
            counts = [(num_sections(length), 1.0)]
            if stage.sections:
                a, b = stage.sections
                p = stage.sections_fraction
                counts = [(k, p / (b - a + 1)) for k in range(a, b + 1)]
                counts += [(num_sections(length), 1.0 - p)] if p < 1 else []
            for k, p in counts:
                for s in range(1, k + 1):
                    weight[s] += examples * p / len(lengths) / k
    total = sum(weight.values())
    return {s: weight[s] / total for s in sorted(weight)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--eval", default=None, help="default: MODEL/eval.json")
    a = p.parse_args()
    from transformers import AutoTokenizer

    from dac.tasks import make_sample
    from dac.train.evaluate import card_fields

    tok = AutoTokenizer.from_pretrained(a.model, local_files_only=True)
    records = json.loads(Path(a.eval or Path(a.model) / "eval.json").read_text())["records"]
    by_quarter: dict = defaultdict(lambda: [0, 0])
    by_place: dict = defaultdict(lambda: [0, 0])
    offsets: Counter = Counter()
    highest: dict = defaultdict(int)
    for r in records:
        if r["policy"] != "dac" or r["task"] not in SINGLE:
            continue
        task, length, seed = r["id"].rsplit("-", 2)
        s = make_sample(task, tok, int(length), int(seed))
        ideal, n = s.evidence[0][0], len(s.sections)
        # the declaration the value is written under (a lead-in answer declares three times);
        # either record schema (the suite's, or the shipped card's legacy one)
        f = card_fields(r)
        exact, declared = f["exact"], f["final"]
        cell = by_quarter[(int(length), int(4 * (ideal - 1) / n))]
        cell[0] += exact
        cell[1] += 1
        at = s.evidence[0][1] / max(1, len(s.sections[ideal - 1]))
        place = by_place[("last quarter" if 4 * (ideal - 1) >= 3 * n else "first three",
                          "section start" if at < 0.2 else "later in section")]
        place[0] += exact
        place[1] += 1
        m = re.fullmatch(r"\[\[focus S(\d+)\]\]", declared or "")
        if m:
            highest[int(length)] = max(highest[int(length)], int(m.group(1)))
            if not exact:
                offsets[int(m.group(1)) - ideal] += 1
        elif not exact:
            offsets["other"] += 1
    print("exact directives by quarter of the context holding the needle (length, quarter):")
    for k in sorted(by_quarter):
        print(f"  {k}: {by_quarter[k][0]}/{by_quarter[k][1]}")
    print("exact directives by the needle's place (context part, place in its section):")
    for k in sorted(by_place):
        print(f"  {k}: {by_place[k][0]}/{by_place[k][1]}")
    print("wrong focuses, declared minus ideal section:",
          dict(sorted(offsets.items(), key=lambda kv: str(kv[0]))))
    print("highest section declared, per length:", dict(sorted(highest.items())))
    meta = json.loads((Path(a.model) / "dac_config.json").read_text())["training"]
    shares = target_shares(meta)
    print("training share of single-section focus targets, by section:")
    print("  " + ", ".join(f"S{s} {100 * v:.2f}%" for s, v in shares.items()))
    for lo, hi in ((1, 4), (5, 8), (9, 12), (13, 16)):
        print(f"  S{lo}-S{hi}: {100 * sum(v for s, v in shares.items() if lo <= s <= hi):.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
