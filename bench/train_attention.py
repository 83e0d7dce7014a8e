"""The training attention's two mask forms, side by side: one forward + backward step.

    PYTHONPATH=src python3 bench/train_attention.py [--lengths 1024,2048,4096] [--device cpu]

``dense``: the reference boolean ``[B, 1, L, L]`` mask through SDPA; ``rows``: causal SDPA for
every row, then only the answer rows recomputed under their block mask (what ``dac train``
uses). Same model (the dac-tiny shape), same batch (focus answers of 48 tokens, one per
example), runs interleaved; prints medians and the ratio, and checks the losses agree.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dac.train.masking import (  # noqa: E402
    ATTN_IMPLEMENTATION, AnswerMask, dense_mask, register, row_mask, use_mask)


def model_of(vocab: int, device: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=384, intermediate_size=1024,
                      num_hidden_layers=6, num_attention_heads=6, num_key_value_heads=2,
                      head_dim=64, max_position_embeddings=16384, rope_theta=500000.0)
    register()
    m = LlamaForCausalLM(cfg)
    m.set_attn_implementation(ATTN_IMPLEMENTATION)
    return m.to(device)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", default="1024,2048,4096")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    vocab, bs, answer = 4738, 64, 48
    model = model_of(vocab, a.device)
    for length in [int(x) for x in a.lengths.split(",")]:
        g = torch.Generator().manual_seed(length)
        ids = torch.randint(300, vocab, (a.batch, length), generator=g).to(a.device)
        close = length - answer
        keep = [0, 3, 4, length // bs // 2] + list(range(close // bs, -(-length // bs)))
        masks = [AnswerMask(close, [sorted({k for k in keep if k * bs <= q}) for q in
                                    range(close, length)])] * a.batch
        forms = {"dense": lambda: dense_mask(masks, length, bs, a.device),
                 "rows": lambda: row_mask(masks, length, bs, a.device)}
        times: dict[str, list[float]] = {k: [] for k in forms}
        losses: dict[str, float] = {}
        for r in range(a.repeats + 1):
            for name, build in forms.items():
                model.zero_grad(set_to_none=True)
                t0 = time.perf_counter()
                with use_mask(model, build()):
                    logits = model(ids).logits[:, close - 1:-1]
                loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab),
                                                         ids[:, close:].reshape(-1))
                loss.backward()
                if a.device == "cuda":
                    torch.cuda.synchronize()
                if r:  # the first round warms up
                    times[name].append(time.perf_counter() - t0)
                losses[name] = loss.item()
        med = {k: statistics.median(v) for k, v in times.items()}
        print(json.dumps({"length": length, "batch": a.batch, "device": a.device,
                          "threads": torch.get_num_threads(), "repeats": a.repeats,
                          "dense_s": round(med["dense"], 4), "rows_s": round(med["rows"], 4),
                          "speedup": round(med["dense"] / med["rows"], 2),
                          "loss_diff": abs(losses["dense"] - losses["rows"])}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
