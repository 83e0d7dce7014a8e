"""Tune a pretrained chat model to follow the DA protocol: LoRA (peft) on DA traces.

    python -m dac.train.lora --base MODEL_DIR --out runs/lora --minutes 5

Each example is a fresh suite sample (seeds from ``--seed-offset`` on, far from the
evaluation's), written out as a DA trace (:mod:`dac.train.da_traces`) and trained under the
attention its declarations imply at inference (:mod:`dac.train.masking`): the loss covers
the response alone, and the tokens naming a magic chunk weigh ``--chunk-weight``. Training
runs until ``--minutes`` or ``--examples`` is reached, whichever is first.

Written to ``--out``: ``adapter/`` (``adapter_config.json``, ``adapter_model.safetensors``),
``merged/`` (the base with the adapter merged in, a model directory every ``dac`` command
loads, protocol ``da``) and ``train_log.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from ..tasks import make_sample, resolve_tasks
from ..tasks.reworded import HELD_OUT_TASKS
from .da_traces import Trace, da_response, make_trace

#: what the adapter trains: every projection of every decoder layer
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DEFAULT_TASKS = "retrieval,multi,niah_reworded"
_CHUNKS = re.compile(r'magic_chunks="([^"]+)"')


def chunk_token_mask(tokenizer: Any, trace: Trace, response: str) -> list[bool]:
    """Per response token, whether it writes a magic chunk number (``K`` in
    ``magic_chunks="K"``): the choice the global step makes."""
    enc = tokenizer(response, add_special_tokens=False, return_offsets_mapping=True)
    spans = [m.span(1) for m in _CHUNKS.finditer(response)]
    out = [any(a < e and s < b for s, e in spans) for a, b in enc["offset_mapping"]]
    return out + [False] * (trace.response_len - len(out))  # the end-of-turn token


class TraceStream(torch.utils.data.IterableDataset):
    """Endless DA traces: task, length and seed drawn per example (worker-sharded seeds)."""

    def __init__(self, tokenizer: Any, tasks: Sequence[str], lengths: Sequence[int],
                 seed_offset: int) -> None:
        self.tokenizer, self.tasks, self.lengths = tokenizer, list(tasks), list(lengths)
        self.seed_offset = seed_offset

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        i = wid
        while True:
            rng = random.Random(self.seed_offset + i)
            task, length = rng.choice(self.tasks), rng.choice(self.lengths)
            seed = self.seed_offset + i
            i += nw
            try:
                sample = make_sample(task, self.tokenizer, length, seed)
                trace = make_trace(sample, self.tokenizer)
            except ValueError:
                continue  # a task that cannot reach this length with this tokenizer
            yield {"trace": trace,
                   "chunk": chunk_token_mask(self.tokenizer, trace, da_response(sample))}


def lr_at(step: int, total: int, peak: float, warmup: int = 20) -> float:
    """Linear warm-up, then cosine down to a tenth of ``peak`` at ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.45 * (1 + math.cos(math.pi * p)))


def example_loss(model: Any, item: dict[str, Any], device: torch.device, block_size: int,
                 chunk_weight: float) -> tuple[torch.Tensor, float, float]:
    """The weighted response loss of one trace, and (mean token loss, whether every chunk
    number token is the argmax) for the log. Forward and backward both run under the
    trace's mask."""
    from .masking import row_mask, use_mask

    trace: Trace = item["trace"]
    ids = torch.tensor([trace.input_ids], device=device)
    start = trace.response_start
    targets = ids[0, start:]
    mask = row_mask([trace.mask], ids.shape[1], block_size, device)
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    with use_mask(model, mask), torch.autocast(device.type, dtype=torch.bfloat16,
                                               enabled=device.type == "cuda"):
        hidden = inner.model(input_ids=ids).last_hidden_state
        logits = inner.lm_head(hidden[0, start - 1:-1]).float()
        tok = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
        chunk = torch.tensor(item["chunk"], device=device)
        w = torch.where(chunk, chunk_weight, 1.0)
        loss = (tok * w).sum() / w.sum()
        if torch.isfinite(loss):  # else skipped: a non-finite loss would poison the step
            loss.backward()
    right = (logits.argmax(-1) == targets)[chunk]
    return loss.detach(), float(tok.detach().mean()), float(right.all()) if right.numel() else -1.0


def save_merged(model: Any, tokenizer: Any, base: Path, out: Path, info: dict[str, Any]) -> None:
    """The base with the adapter merged in, as a model directory (protocol ``da``)."""
    from ..catalog.fetch import write_dac_config

    merged = model.merge_and_unload()
    merged.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    for name in ("generation_config.json", "chat_template.jinja"):
        if (base / name).exists() and not (out / name).exists():
            shutil.copy(base / name, out / name)
    write_dac_config(out, {"protocol": "da", "source": info})


def train(base: str | Path, out: str | Path, *, tasks: str = DEFAULT_TASKS,
          lengths: Sequence[int] = (2048, 4096, 8192, 16384), minutes: float = 5.0,
          examples: int | None = None, rank: int = 8, alpha: int = 16, lr: float = 1e-4,
          accum: int = 4, chunk_weight: float = 3.0, workers: int = 4,
          seed_offset: int = 1_000_000, block_size: int = 64, log_every: int = 10,
          say: Any = print) -> dict[str, Any]:
    """Train a LoRA adapter on DA traces; returns the run's summary (see the module
    docstring for what is written)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..tasks.sources import preload_speeches
    from .masking import ATTN_IMPLEMENTATION, register

    base, out = Path(base), Path(out)
    names = resolve_tasks(tasks)
    held = [n for n in names if n in HELD_OUT_TASKS]
    if held:
        raise ValueError(f"{', '.join(held)} are held out of training")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    register()
    tok = AutoTokenizer.from_pretrained(base)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype,
                                                 attn_implementation=ATTN_IMPLEMENTATION)
    model.to(device)
    model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0,
                                             target_modules=list(TARGET_MODULES),
                                             task_type="CAUSAL_LM"))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    say(f"LoRA r={rank}: {trainable:,} trainable parameters; tasks {', '.join(names)}; "
        f"lengths {list(lengths)}; device {device}")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                            weight_decay=0.0)
    preload_speeches()  # before the workers fork, so they share the split corpus
    stream = TraceStream(tok, names, lengths, seed_offset)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers,
                                         prefetch_factor=4 if workers else None)
    out.mkdir(parents=True, exist_ok=True)
    log = (out / "train_log.jsonl").open("w")
    budget = minutes * 60
    # the schedule's length: the example budget, or what the time budget is expected to allow
    planned = examples or 10 ** 9
    t0 = time.perf_counter()
    n = step = 0
    tokens = 0
    acc: list[tuple[float, float]] = []
    bad: list[dict[str, Any]] = []  # examples or steps skipped for a non-finite value
    model.train()
    for item in loader:
        loss, tok_loss, chunk_ok = example_loss(model, item, device, block_size, chunk_weight)
        n += 1
        if not math.isfinite(tok_loss):
            bad.append({"example": n, "task": item["trace"].task,
                        "tokens": len(item["trace"].input_ids), "what": "loss"})
        else:
            acc.append((tok_loss, chunk_ok))
        tokens += len(item["trace"].input_ids)
        elapsed = time.perf_counter() - t0
        if n % accum == 0:
            if examples is None and step == 20:  # size the schedule from the first steps
                planned = max(n + accum, int(n * budget / max(elapsed, 1e-6)))
            total = max(1, planned // accum)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, lr)
            norm = torch.nn.utils.clip_grad_norm_(
                [p for p in model.parameters() if p.requires_grad], 1.0)
            if torch.isfinite(norm):
                opt.step()
            else:  # a non-finite gradient: drop this step's examples, keep the weights
                bad.append({"example": n, "task": item["trace"].task, "what": "gradient"})
            opt.zero_grad(set_to_none=True)
            step += 1
            if step % log_every == 0:
                oks = [c for _, c in acc if c >= 0]
                rec = {"step": step, "examples": n, "elapsed_s": round(elapsed, 1),
                       "loss": round(sum(t for t, _ in acc) / len(acc), 4) if acc else None,
                       "skipped": len(bad),
                       "chunk_acc": round(sum(oks) / len(oks), 3) if oks else None,
                       "lr": opt.param_groups[0]["lr"], "tokens": tokens}
                log.write(json.dumps(rec) + "\n")
                log.flush()
                say(json.dumps(rec))
                acc.clear()
        if (examples is not None and n >= examples) or elapsed >= budget:
            break
    log.close()
    wall = time.perf_counter() - t0
    # peft keeps the adapter in float32 over a bf16 base; it ships, and is merged, in the
    # base's dtype (half the bytes: rank 8 on every projection of the 0.5B model is 8.8 MB)
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.to(dtype)
    model.save_pretrained(out / "adapter", safe_serialization=True)
    size = (out / "adapter" / "adapter_model.safetensors").stat().st_size
    summary = {"examples": n, "optimizer_steps": step, "tokens": tokens,
               "train_s": round(wall, 1), "rank": rank, "alpha": alpha, "lr": lr,
               "accum": accum, "chunk_weight": chunk_weight, "tasks": names,
               "lengths": list(lengths), "seed_offset": seed_offset,
               "trainable_params": trainable, "adapter_bytes": size,
               "skipped": bad}
    (out / "adapter" / "training.json").write_text(json.dumps(summary, indent=2))
    save_merged(model, tok, base, out / "merged", {"base": str(base), "lora": summary})
    say(json.dumps(summary))
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dac.train.lora",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="the model directory to tune")
    ap.add_argument("--out", required=True)
    ap.add_argument("--tasks", default=DEFAULT_TASKS, help="tasks or families (comma list)")
    ap.add_argument("--lengths", default="2048,4096,8192,16384",
                    help="suite lengths in tokens, drawn uniformly per example")
    ap.add_argument("--minutes", type=float, default=5.0, help="training time budget")
    ap.add_argument("--examples", type=int, help="stop after this many examples")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--accum", type=int, default=4, help="examples per optimizer step")
    ap.add_argument("--chunk-weight", type=float, default=3.0,
                    help="loss weight of the tokens that name a magic chunk")
    ap.add_argument("--workers", type=int, default=4, help="data-loader processes")
    ap.add_argument("--seed-offset", type=int, default=1_000_000)
    a = ap.parse_args(argv)
    try:
        lengths = [int(x) for x in a.lengths.split(",") if x.strip()]
        train(a.base, a.out, tasks=a.tasks, lengths=lengths, minutes=a.minutes,
              examples=a.examples, rank=a.rank, alpha=a.alpha, lr=a.lr, accum=a.accum,
              chunk_weight=a.chunk_weight, workers=a.workers, seed_offset=a.seed_offset)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
