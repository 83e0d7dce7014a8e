"""How fast does a from-scratch Llama learn to copy, as a function of the copy distance?

    PYTHONPATH=src python3 bench/induction.py --layers 2 --hidden 128 --spans 16,32,64 [--steps 600]

Trains a fresh model (the dac-tiny vocabulary size, head_dim 64) on ``BOS + r + r`` where ``r``
is random tokens, loss on every position, AdamW at a constant lr after a 50-step warmup, under
the training attention (``attn_implementation="dac_train"``). With ``--fixed``, ``r`` is always
``span`` tokens long, so a head that reads the token exactly ``span`` positions back solves it
(a positional shortcut, not copying by content); by default each sequence draws its length
from ``span // 2 .. span`` (padded, the padding out of the loss), so only matching the current
token's earlier occurrence works: induction. Every ``--every`` steps it logs the mean loss on
the first and the second copy. Prints, per span, the first logged step at which the second
copy costs under half the first (``formed_at``; null if never), and the tokens seen by then.
CPU-sized: the figures in research/training-log.md ("Sixth run") come from this script.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dac.train.masking import (  # noqa: E402
    ATTN_IMPLEMENTATION, AnswerMask, register, row_mask, use_mask)

VOCAB, LOW, HIGH = 4738, 300, 4096  # dac-tiny's vocabulary; random tokens from its BPE part


def run(span: int, a: argparse.Namespace) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(a.seed)
    heads = a.hidden // 64
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=a.hidden, intermediate_size=a.hidden * 8 // 3,
                      num_hidden_layers=a.layers, num_attention_heads=heads,
                      num_key_value_heads=max(1, heads // 3), head_dim=64,
                      max_position_embeddings=4096, rope_theta=500000.0)
    register()
    model = LlamaForCausalLM(cfg)
    model.set_attn_implementation(ATTN_IMPLEMENTATION)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.95), weight_decay=0.01)
    width = 2 * span + 1
    batch = max(1, a.batch_tokens // width)
    g = torch.Generator().manual_seed(a.seed + span)
    mask = row_mask([AnswerMask(-1, [])] * batch, width, 64)
    pos = torch.arange(width - 1)[None, :]  # label positions: label p is token p + 1
    log, formed, t0 = [], None, time.time()
    for step in range(1, a.steps + 1):
        n = (torch.full((batch, 1), span) if a.fixed
             else torch.randint(span // 2, span + 1, (batch, 1), generator=g))
        r = torch.randint(LOW, HIGH, (batch, span), generator=g)
        # BOS, r[:n], r[:n], then padding (token 0, out of the loss)
        src = torch.where(pos < n, pos, pos - n).clamp(max=span - 1)
        ids = torch.cat([torch.ones(batch, 1, dtype=torch.long),
                         torch.where(pos < 2 * n, r.gather(1, src), 0)], 1)
        first_half, second_half = pos < n, (pos > n) & (pos < 2 * n)  # the copy's 1st token: new
        with use_mask(model, mask):
            logits = model(ids).logits[:, :-1]
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), ids[:, 1:].reshape(-1),
                                                reduction="none").view(batch, -1)
        for group in opt.param_groups:
            group["lr"] = a.lr * min(1.0, step / 50)
        opt.zero_grad(set_to_none=True)
        nll[pos < 2 * n].mean().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % a.every == 0:
            first, second = nll[first_half].mean().item(), nll[second_half].mean().item()
            log.append((step, round(first, 3), round(second, 3)))
            if formed is None and second < first / 2:
                formed = step
    return {"span": span, "fixed": a.fixed, "layers": a.layers, "hidden": a.hidden,
            "batch": batch, "lr": a.lr, "steps": a.steps, "formed_at": formed,
            "tokens_by_then": formed * batch * width if formed else None,
            "seconds": round(time.time() - t0, 1), "log": log}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spans", default="16,32,64")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch-tokens", type=int, default=2112)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fixed", action="store_true",
                   help="every copy exactly --span tokens back (allows a positional shortcut)")
    a = p.parse_args()
    if a.hidden % 64:
        p.error("--hidden must be a multiple of 64 (head_dim 64)")
    for span in [int(x) for x in a.spans.split(",")]:
        print(json.dumps(run(span, a)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
