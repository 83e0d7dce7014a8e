"""Which step of a stepwise answer loses it: accuracy when its first steps are given.

For each multi-region prompt, the model decodes under DAC after its ideal stepwise answer's
first ``k`` steps (``dac.train.targets.hop_target``, e.g. ``[[focus S3]] Mary,``) have been
forced, for each ``k`` asked; ``k = 0`` is the model on its own. If accuracy jumps once a
step is given, that step is where answers are lost. A forced step counts in the score where
it holds part of the answer (variable_tracking's names, the values of niah_multivalue and
niah_multiquery); world_state's holder and chained_facts' keys do not. Greedy, the engines'
default section bound, the plan and prompt the model was trained with.

``python bench/forced_steps.py MODEL_DIR --task world_state --length 4096 --n 16 --steps 0,1``
"""

from __future__ import annotations

import argparse
import json
import time

from transformers import LogitsProcessorList


def prefix_text(sample, k: int) -> str:
    """The first ``k`` steps of the ideal stepwise answer, each with its separator."""
    if k == 0:
        return ""
    from dac.train.targets import hop_target

    parts = hop_target(sample).split(", ")
    return ", ".join(parts[:k]) + (", " if k < len(parts) else "")


def main(argv: list[str] | None = None) -> int:
    from dac.engines.hf import generate
    from dac.engines.hf.forcing import ForceText
    from dac.models import load, load_prompt_options
    from dac.planning.blocks import PlanConfig
    from dac.tasks import TASKS, make_sample, score
    from dac.train.loop import plan_config

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--task", default="world_state")
    p.add_argument("--length", type=int, default=4096)
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--steps", default="0,1", help="numbers of ideal steps to force")
    p.add_argument("--batch", type=int, default=8)
    a = p.parse_args(argv)
    if a.task not in TASKS or TASKS[a.task].family != "multi":
        p.error(f"--task must be a multi-region task, not {a.task!r}")
    try:
        ks = [int(x) for x in a.steps.split(",")]
    except ValueError:
        ks = []
    if not ks or min(ks) < 0:
        p.error(f"--steps must be whole numbers >= 0 separated by commas, not {a.steps!r}")
    if a.n < 1 or a.batch < 1:
        p.error("--n and --batch must be at least 1")
    try:
        model, tok = load(a.model)
    except (OSError, ValueError) as e:
        p.error(f"cannot load the model {a.model!r}: {e}")
    cfg = plan_config(a.model) or PlanConfig()
    prompt = load_prompt_options(a.model)
    tok.padding_side = "left"
    try:
        samples = [make_sample(a.task, tok, a.length, seed) for seed in range(a.n)]
    except ValueError as e:
        p.error(str(e))
    max_new = TASKS[a.task].max_new_tokens
    t0 = time.time()
    for k in ks:
        scores, fractions = [], []
        for i in range(0, len(samples), a.batch):
            chunk = samples[i:i + a.batch]
            lays = [s.layout(tok, **(prompt or {})) for s in chunk]
            texts = [prefix_text(s, k) for s in chunk]
            scripts = [tok(t, add_special_tokens=False)["input_ids"] if t else [] for t in texts]
            width = max(lay.prompt_len for lay in lays)
            res = generate(model, tok, lays, policy="dac", config=cfg,
                           max_new_tokens=max_new + max(len(s) for s in scripts),
                           logits_processor=LogitsProcessorList([ForceText(scripts, width)]))
            for s, r in zip(chunk, res):
                scores.append(score(a.task, r.answer, s))
                fractions.append(r.fraction)
        print(json.dumps({"task": a.task, "length": a.length, "forced_steps": k, "n": len(scores),
                          "accuracy": round(sum(scores) / len(scores), 4),
                          "kv_fraction": round(sum(fractions) / len(fractions), 4),
                          "elapsed_s": round(time.time() - t0, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
