"""Measure the safety net: how often it fires, what it costs, what it saves (evidence recall).

The model is made to declare a focus first (the task's ideal one, or a wrong section), then
writes freely; each sample runs under ``dac`` and under each ``dac+safety`` spec. Reported per
scenario and policy: fire rate, KV read fraction, evidence recall over the answer steps, and
score. On a random-weight model the confidence signal carries no information, so the
fire rates there measure the net's false-alarm behaviour and its mechanics, not its benefit.

    python -m tests.reliability.measure_safety --model DIR [--task passkey --length 1k ...]
"""

from __future__ import annotations

import argparse
import json
import random
from typing import Any

from dac.engines.hf.generate import generate
from dac.eval.records import evidence_recall
from dac.models import load
from dac.planning import PlanConfig
from dac.protocol import Directive, Mode
from dac.tasks import make_sample, score
from tests.helpers import forcing


def wrong_focus(sample: Any) -> Directive:
    """A focus on one section that holds none of the sample's evidence (fixed per sample)."""
    rng = random.Random(sample.seed)
    good = {sec for sec, _, _ in sample.evidence}
    bad = [k for k in range(1, len(sample.sections) + 1) if k not in good]
    return Directive(Mode.FOCUS, ((k := rng.choice(bad), k),)) if bad else sample.directive


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--task", default="niah_single_noise")
    ap.add_argument("--length", type=int, default=1024)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--free-tokens", type=int, default=24, help="tokens written after the focus")
    ap.add_argument("--policies", default="dac,dac+safety,dac+safety:ratio=0.8")
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--sink-tokens", type=int, default=16)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--json", default=None, help="write the table here")
    args = ap.parse_args(argv)
    model, tok = load(args.model)
    cfg = PlanConfig(block_size=args.block_size, sink_tokens=args.sink_tokens, window=args.window)
    samples = [make_sample(args.task, tok, args.length, s) for s in range(args.samples)]
    rows = []
    for scenario in ("right", "wrong"):
        for spec in args.policies.split(","):
            acc: dict[str, float] = {"fired": 0, "fraction": 0.0, "recall": 0.0, "score": 0.0}
            for s in samples:
                lay = s.layout(tok)
                d = s.directive if scenario == "right" else wrong_focus(s)
                text = d.render() + " "
                n = len(tok(text, add_special_tokens=False)["input_ids"]) + args.free_tokens
                (r,) = generate(model, tok, [lay], policy=spec, config=cfg, max_new_tokens=n,
                                evidence=[s.evidence_spans(lay)], **forcing(tok, [text], [lay]))
                acc["fired"] += bool(r.policy_report.get("safety", {}).get("fired"))
                acc["fraction"] += r.fraction
                acc["recall"] += evidence_recall(r) or 0.0
                acc["score"] += score(s.task, r.answer, s)
            k = len(samples)
            rows.append({"scenario": scenario, "policy": spec, "samples": k,
                         "fire_rate": acc["fired"] / k, "kv_fraction": acc["fraction"] / k,
                         "evidence_recall": acc["recall"] / k, "score": acc["score"] / k})
    print(f"{'scenario':8} {'policy':26} {'fired':>6} {'kv':>6} {'recall':>7} {'score':>6}")
    for r in rows:
        print(f"{r['scenario']:8} {r['policy']:26} {r['fire_rate']:6.2f} {r['kv_fraction']:6.3f} "
              f"{r['evidence_recall']:7.3f} {r['score']:6.2f}")
    out = {"args": vars(args), "rows": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
