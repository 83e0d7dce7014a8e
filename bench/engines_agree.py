"""The shipped model under DAC in both engines: Hugging Face and vLLM (CPU), side by side.

For each (task, seed): the prompt from the suite's generator, greedy decoding under ``dac`` in
the HF engine and in the vLLM engine (the project's plugin), then both texts, scores and the
fraction of KV read. Agreement is reported, not asserted: the two engines run different float32
kernels, so near-tied tokens may differ (the model card quotes the output).

``PYTHONPATH=src python bench/engines_agree.py [--model DIR] [--length 2048] [--seeds 0,1]``
"""

from __future__ import annotations

import argparse
import json
import os


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="src/dac/assets/dac-tiny")
    p.add_argument("--tasks", default="passkey,niah_single_noise,niah_single_prose,passage_count,"
                                      "tail_last")
    p.add_argument("--length", type=int, default=2048)
    p.add_argument("--seeds", default="0,1")
    a = p.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from dac.engines.hf import generate
    from dac.engines.vllm.engine import VLLMEngine
    from dac.models import load, load_plan_config
    from dac.tasks import TASKS, make_sample, score

    model, tok = load(a.model, dtype="float32")
    cfg = load_plan_config(a.model)
    eng = VLLMEngine(a.model, block_size=cfg.block_size, dtype="float32",
                     max_model_len=a.length + 512, max_num_seqs=4, seed=0)
    same = total = 0
    for task in a.tasks.split(","):
        for seed in map(int, a.seeds.split(",")):
            s = make_sample(task, tok, a.length, seed)
            lay = s.layout(tok)
            n = TASKS[task].max_new_tokens
            h = generate(model, tok, [lay], policy="dac", config=cfg, max_new_tokens=n)[0]
            v = eng.generate([lay], policy="dac", config=cfg, max_new_tokens=n)[0]
            total += 1
            same += h.text == v.text
            print(json.dumps({"task": task, "seed": seed, "hf": h.text, "vllm": v.text,
                              "hf_score": score(task, h.text, s),
                              "vllm_score": score(task, v.text, s),
                              "hf_kv": round(h.fraction, 3), "vllm_kv": round(v.fraction, 3)}))
    print(json.dumps({"identical_texts": same, "prompts": total}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
