"""Copying probes: does a model have the induction heads retrieval needs?

Cheap measurements, under full attention, that tell *why* a model fails to retrieve:

- ``repeat``: mean next-token loss on a random token span and on its exact repetition. A model
  with induction (copying) heads predicts the repetition almost for free; one without pays about
  what it paid the first time.
- ``digits``: the same on random digit strings: copying that never saw a digit copies words
  but not the numbers the retrieval tasks ask for.
- ``lookup``: in the ``lookup`` copy format (keyed lines in marked sections, then
  ``key -> [[focus Sk]] value``), the share of focus tokens predicted right: naming the
  section that holds a key, which the keyed retrieval tasks' directive needs.
- ``answer``: mean loss per target position (directive token, then answer tokens) on the suite's
  retrieval tasks, teacher-forced with the ideal target. A low directive loss with high answer
  losses means the model finds the section but does not copy the value.

``python -m dac.train.probe MODEL_DIR [--tasks passkey,niah_single_noise] [--length 512] [--n 12]``
"""

from __future__ import annotations

import json
from typing import Any

import torch


def repeat_loss(model: Any, bos_id: int, vocab: int, *, span: int = 100, batch: int = 4,
                seed: int = 0, low: int = 300, pool: list[int] | None = None
                ) -> dict[str, float]:
    """Mean loss on a random span of ``span`` tokens and on its repetition right after it.
    Tokens are drawn from ``low..vocab`` (past the special and byte tokens), or from ``pool``."""
    g = torch.Generator().manual_seed(seed)
    if pool:
        r = torch.tensor(pool)[torch.randint(0, len(pool), (batch, span), generator=g)]
    else:
        r = torch.randint(min(low, vocab // 2), vocab, (batch, span), generator=g)
    ids = torch.cat([torch.full((batch, 1), bos_id), r, r], 1).to(model.device)
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits.float(), -1)
    nll = -logp[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]
    return {"first": round(nll[:, :span].mean().item(), 3),
            "repeat": round(nll[:, span + 1:].mean().item(), 3)}


def digit_ids(tok: Any) -> list[int]:
    """The ten single-digit tokens (every byte-level vocabulary has them)."""
    return [tok.convert_tokens_to_ids(str(d)) for d in range(10)]


def lookup_accuracy(model: Any, tok: Any, *, length: int = 400, n: int = 8,
                    seed0: int = 10**9) -> dict[str, float]:
    """Teacher-forced share of right ``[[focus Sk]]`` tokens in ``n`` lookup sequences (seeds
    ``seed0..``, far from training's), and what always naming the most frequent section would
    score (the floor). Needs a tokenizer whose single-section focus is one token."""
    from collections import Counter

    from ..protocol.grammar import Directive, Mode
    from .data import LOOKUP_SECTIONS, copy_ids

    focus = {}
    for k in range(1, LOOKUP_SECTIONS + 1):
        text = Directive(Mode.FOCUS, ((k, k),)).render()
        ids = tok(text, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError("lookup_accuracy needs single-token focus directives")
        focus[ids[0]] = k
    right = total = 0
    counts: Counter = Counter()
    for i in range(n):
        seq = copy_ids(tok, length, seed0 + i, ["lookup"])
        ids = torch.tensor([seq], device=model.device)
        with torch.no_grad():
            pred = model(ids).logits[0, :-1].argmax(-1).tolist()
        for pos, t in enumerate(seq[1:]):
            if t in focus:
                right += pred[pos] == t
                total += 1
                counts[t] += 1
    return {"focus_right": round(right / max(1, total), 3), "focus_tokens": total,
            "floor": round(max(counts.values(), default=0) / max(1, total), 3)}


def answer_losses(model: Any, tok: Any, task: str, *, length: int = 512, n: int = 12,
                  seed0: int = 0, positions: int = 8, lead: bool = False) -> list[float]:
    """Mean loss at each target position (0 = the directive token) over seeds ``seed0..+n``;
    with ``lead``, at the directive and then at the answer's value, after the lead."""
    from ..protocol.context import build_prompt
    from ..tasks import make_sample
    from .targets import led_target

    sums = [[0.0, 0] for _ in range(positions)]
    for i in range(n):
        s = make_sample(task, tok, length, seed0 + i)
        layout = build_prompt(tok, s.sections, s.question)
        text = led_target(s) if lead else s.target
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        target = enc["input_ids"]
        at = list(range(len(target)))
        if lead and s.lead:  # the directive, then the value's tokens (skip the lead's)
            value_start = len(text) - len(s.answer_text)
            at = [0] + [j for j, (_, b) in enumerate(enc["offset_mapping"]) if b > value_start]
        ids = torch.tensor([list(layout.input_ids) + target], device=model.device)
        with torch.no_grad():
            logits = model(ids).logits[0].float()
        p = len(layout.input_ids)
        logp = torch.log_softmax(logits[p - 1: p - 1 + len(target)], -1)
        for k, j in enumerate(at[:positions]):
            sums[k][0] -= logp[j, target[j]].item()
            sums[k][1] += 1
    return [round(a / c, 3) for a, c in sums if c]


def main(argv: list[str] | None = None) -> int:
    import argparse

    from ..models import load

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--tasks", default="passkey,niah_single_noise")
    p.add_argument("--length", type=int, default=512)
    p.add_argument("--n", type=int, default=12)
    p.add_argument("--lead", action="store_true",
                   help="teacher-force dac.train.targets.led_target; report the directive, "
                        "then the value")
    p.add_argument("--lookup", action="store_true",
                   help="also report lookup_accuracy (lookup copy sequences of --length tokens)")
    a = p.parse_args(argv)
    model, tok = load(a.model, dtype=torch.float32, device="cpu")
    model.eval()
    print(json.dumps({"model": a.model,
                      "repeat": repeat_loss(model, tok.bos_token_id, tok.vocab_size),
                      "digits": repeat_loss(model, tok.bos_token_id, tok.vocab_size,
                                            pool=digit_ids(tok))}))
    if a.lookup:
        try:
            print(json.dumps({"lookup": lookup_accuracy(model, tok, length=a.length, n=a.n)}))
        except ValueError as e:
            p.error(str(e))
    for task in a.tasks.split(","):
        print(json.dumps({"task": task, "length": a.length, "n": a.n,
                          "loss_per_target_position": answer_losses(
                              model, tok, task, length=a.length, n=a.n, lead=a.lead)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
