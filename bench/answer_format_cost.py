"""What an answer format costs under DAC: the ideal answer forced, the KV read measured.

The decoding attention cost of an answer depends on its text alone (which declarations it
makes, and when), not on whether the model would write it. So each format is measured by
forcing its ideal text, token by token, through the HF engine under ``dac`` and reading the
engine's own KV fraction: what a model that learned the format perfectly would read.

Formats (:mod:`dac.train.targets`; the training stage fields that produce them in brackets):

- ``directive_first``: ``[[focus S3]] The special magic number for X is: 6046601``
  (``answer_leads``, the shipped model's format);
- ``lead_first``: ``The special magic number for X is: [[focus S3]] 6046601`` (``lead_first``:
  the lead decoded under global);
- ``lead_local``: ``[[local]] The special ... is: [[global]][[focus S3]] 6046601``
  (``lead_directive: "[[local]]"``); ``lead_local256``: the same with ``[[local 256]]``;
- ``per_hop``, for multi-region answers (``hop_target``; stage ``per_hop``): one
  focus per step, each after the first chosen by one step that reads everything (the step
  before it reads only the previous step's section): ``[[focus S2]] 9686033,
  [[global]][[focus S5]] 5312219, ...``; a chain's keys are written before its value
  (``[[focus S1]] the red fox, [[global]][[focus S3]] the old mill, [[global]][[focus S3]]
  2794554``); against ``directive_first``'s one focus over all of them.

``PYTHONPATH=src python bench/answer_format_cost.py [--model DIR] [--lengths 4096,8192] [--n 4]
[--formats ...] [--local-window N]``
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

FORMATS = {"directive_first": None, "lead_first": "", "lead_local": "[[local]]",
           "lead_local256": "[[local 256]]", "per_hop": None}
TASKS = ("niah_multikey", "niah_multikey_dense", "kv_json", "niah_single_noise",
         "niah_single_prose", "niah_single_uuid", "passkey")


def text_of(sample, fmt: str) -> str | None:
    """The text of format ``fmt`` for ``sample`` (``None`` where the sample has no such answer)."""
    from dac.train.targets import hop_target, lead_in_target, led_target

    if fmt == "per_hop":
        return hop_target(sample)  # None outside the multi-region tasks
    lead_directive = FORMATS[fmt]
    return led_target(sample) if lead_directive is None else lead_in_target(sample,
                                                                             lead_directive)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="src/dac/assets/dac-tiny")
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--lengths", default="4096,8192")
    p.add_argument("--n", type=int, default=4, help="seeds 0..n-1 per task and length")
    p.add_argument("--formats", default=",".join(FORMATS))
    p.add_argument("--local-window", type=int, default=None,
                   help="the plan's local window (default: the model's dac_config.json)")
    a = p.parse_args()
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    from dac.engines.hf import generate
    from dac.models import load, load_plan_config
    from dac.tasks import make_sample

    class Force(LogitsProcessor):
        def __init__(self, scripts: list[list[int]], width: int):
            self.scripts, self.width = scripts, width

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            step = input_ids.shape[1] - self.width
            for b, script in enumerate(self.scripts):
                scores[b] = float("-inf")
                scores[b, script[min(step, len(script) - 1)]] = 0.0
            return scores

    model, tok = load(a.model)
    cfg = load_plan_config(a.model)
    if a.local_window is not None:
        import dataclasses

        cfg = dataclasses.replace(cfg, local_window=a.local_window)
    tok.padding_side = "left"
    formats = a.formats.split(",")
    unknown = set(formats) - set(FORMATS)
    if unknown:
        p.error(f"unknown formats: {sorted(unknown)}; choose from {', '.join(FORMATS)}")
    family: dict = defaultdict(list)
    for length in map(int, a.lengths.split(",")):
        for task in a.tasks.split(","):
            samples = [make_sample(task, tok, length, seed) for seed in range(a.n)]
            layouts = [s.layout(tok) for s in samples]
            width = max(lay.prompt_len for lay in layouts)
            for fmt in formats:
                texts = [text_of(s, fmt) for s in samples]
                if any(t is None for t in texts):
                    print(json.dumps({"task": task, "length": length, "format": fmt,
                                      "skipped": "the format does not apply"}), flush=True)
                    continue
                scripts = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
                res = generate(model, tok, layouts, policy="dac", config=cfg,
                               max_new_tokens=max(len(x) for x in scripts),
                               logits_processor=LogitsProcessorList([Force(scripts, width)]))
                kv = sum(r.fraction for r in res) / len(res)
                steps = sum(len(r.steps) for r in res) / len(res)
                group = ("keyed" if task in TASKS[:3] else
                         "single-needle" if samples[0].family == "retrieval" else
                         samples[0].family)
                family[(length, fmt, group)].append(kv)
                print(json.dumps({"task": task, "length": length, "format": fmt,
                                  "kv_fraction": round(kv, 4), "decode_steps": steps}),
                      flush=True)
    for (length, fmt, group), kvs in sorted(family.items()):
        print(json.dumps({"length": length, "format": fmt, "tasks": group,
                          "kv_fraction": round(sum(kvs) / len(kvs), 4)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
