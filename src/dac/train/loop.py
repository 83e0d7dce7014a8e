"""``dac train``: tokenizer, model, curriculum, masked answers, checkpoints and a JSON log.

Runs on CPU (toy configs, tests) or one CUDA GPU (bf16 autocast). A stage may carry a time
budget (``seconds``) besides its step count: it ends at whichever comes first, and the steps
actually run are recorded in ``dac_config.json`` so a run can be replayed by steps alone.
"""

from __future__ import annotations

import json
import math
import platform
import random
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch

from .config import Stage, TrainConfig
from .data import Batch, SampleFn, StageData, collate
from .grow import deepen
from .masking import ATTN_IMPLEMENTATION, AnswerMask, register, row_mask, use_mask

#: Files of a trained model directory besides transformers' own.
DAC_CONFIG = "dac_config.json"


def warm_sources() -> None:
    """Split every speech's sentences once, before data workers fork: they share them instead
    of each splitting the corpus again (:func:`dac.tasks.sources.preload_speeches`)."""
    from ..tasks.sources import preload_speeches

    preload_speeches()


def default_sample_fn() -> SampleFn:
    from ..tasks import make_sample

    return make_sample


def tokenizer_texts(tasks: list[str], sample_fn: SampleFn, probe_tok: Any, seed: int) -> list[str]:
    """Rendered prompts of a few training-seed samples per task (question templates, keys)."""
    from ..protocol.context import build_prompt

    out = []
    for k, task in enumerate(tasks):
        for j in range(3):
            try:
                s = sample_fn(task, probe_tok, 1024, seed + 7919 * k + j)
            except ValueError:
                continue
            out.append(build_prompt(probe_tok, s.sections, s.question).text + " " + s.target)
    return out


def make_tokenizer(cfg: TrainConfig, tasks: list[str], sample_fn: SampleFn) -> Any:
    from .tokenizer import build_tokenizer

    probe = build_tokenizer(cfg.tokenizer)  # a first pass to size samples for the corpus
    return build_tokenizer(cfg.tokenizer, tokenizer_texts(tasks, sample_fn, probe,
                                                          cfg.seed_base - 1_000_000))


def make_model(cfg: TrainConfig, tokenizer: Any) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    m = cfg.model
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=m.hidden, intermediate_size=m.intermediate,
        num_hidden_layers=m.layers, num_attention_heads=m.heads, num_key_value_heads=m.kv_heads,
        head_dim=m.head_dim, max_position_embeddings=m.max_positions, rope_theta=m.rope_theta,
        tie_word_embeddings=m.tie_embeddings, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.02)
    torch.manual_seed(cfg.seed)
    return LlamaForCausalLM(config)


def _family(task: str) -> str:
    from ..tasks import TASKS

    return TASKS[task].family if task in TASKS else task


def family_losses(acc: list[tuple[torch.Tensor, torch.Tensor, list[str]]]) -> dict[str, float]:
    """Mean target-token loss per task family over the logged steps."""
    sums: dict[str, list[float]] = {}
    for per_example, counts, tasks in acc:
        for loss, n, task in zip(per_example.tolist(), counts.tolist(), tasks):
            s = sums.setdefault(_family(task), [0.0, 0])
            s[0] += loss
            s[1] += n
    return {f: round(v[0] / max(1, v[1]), 3) for f, v in sorted(sums.items())}


def family_directive_acc(acc: list[tuple[torch.Tensor, list[str]]]) -> dict[str, float]:
    """Share of examples per task family whose directive tokens are all predicted right
    (teacher-forced argmax) over the logged steps: the training-time twin of the evaluation's
    exact-directive rate, from data the model has not seen before."""
    sums: dict[str, list[int]] = {}
    for ok, tasks in acc:
        for v, task in zip(ok.tolist(), tasks):
            if v < 0:  # no directive token (copy data)
                continue
            s = sums.setdefault(_family(task), [0, 0])
            s[0] += int(v)
            s[1] += 1
    return {f: round(v[0] / v[1], 3) for f, v in sorted(sums.items())}


def make_optimizer(model: Any, cfg: TrainConfig, dev: torch.device) -> torch.optim.Optimizer:
    decay = [p for _, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for _, p in model.named_parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=cfg.lr, betas=(0.9, 0.95), fused=dev.type == "cuda")


def segment(cfg: TrainConfig, si: int) -> tuple[int, int]:
    """The stages sharing stage ``si``'s LR schedule: from the last restart to the next."""
    a = max([0] + [i for i in range(si + 1) if cfg.stages[i].restart])
    b = min([len(cfg.stages)] + [i for i in range(si + 1, len(cfg.stages))
                                 if cfg.stages[i].restart])
    return a, b


def seed_offset(cfg: TrainConfig, si: int) -> int:
    """The first example index (seeds count from ``seed_base``) that stage ``si`` draws: every
    earlier stage's planned examples, whether or not its time budget let them all run, so each
    stage's data is fixed by the config alone. A stage with ``seeds_from`` draws that earlier
    stage's examples again."""
    again = cfg.stages[si].seeds_from
    if again is not None:
        return seed_offset(cfg, again)  # an earlier stage: the config forbids cycles
    return sum(s.steps * stage_shape(s)[1] for s in cfg.stages[:si])


def stage_shape(stage: Stage) -> tuple[int, int]:
    """(padded width, batch size): the prompt may exceed its length by 5%, plus the target.
    A copy stage's sequences are exactly ``length`` tokens: no margin to pad."""
    if stage.kind == "copy":
        width = -(-stage.length // 64) * 64
    else:
        width = -(-(int(stage.length * 1.06) + 160) // 128) * 128
    return width, max(1, stage.batch_tokens // width)


def lr_at(cfg: TrainConfig, step: int, progress: float, peak: float | None = None) -> float:
    """Linear warmup, then cosine from ``peak`` (default ``cfg.lr``) to ``cfg.min_lr``."""
    peak = cfg.lr if peak is None else peak
    warm = min(1.0, (step + 1) / max(1, cfg.warmup))
    cos = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return warm * (cfg.min_lr + (peak - cfg.min_lr) * cos)


def batch_loss(model: Any, batch: Batch, device: torch.device, block_size: int,
               prompt_weight: float = 0.0, directive_weight: float = 1.0
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean cross-entropy over the target tokens (answers under their directive's mask; the
    directive's tokens weigh ``directive_weight``), plus ``prompt_weight`` times the mean
    next-token loss over the prompt; each example's summed target-token loss and whether its
    directive tokens are all the argmax (1, 0; -1 without a directive), for per-family
    logging."""
    ids = batch.ids.to(device, non_blocking=True)
    targets = batch.targets.to(device, non_blocking=True)
    mask = row_mask(batch.masks, ids.shape[1], block_size, device)
    with use_mask(model, mask), torch.autocast(device.type, dtype=torch.bfloat16,
                                               enabled=device.type == "cuda"):
        hidden = model.model(input_ids=ids).last_hidden_state
        sel = targets != -100
        logits = model.lm_head(hidden[sel]).float()
        tok_loss = torch.nn.functional.cross_entropy(logits, targets[sel], reduction="none")
        # copy examples (all prompt) leave a batch of a copy stage with no target tokens
        if tok_loss.numel():
            w = 1.0 + (directive_weight - 1.0) * batch.directive.to(device)[sel].float()
            loss = (tok_loss * w).sum() / w.sum()
        else:
            loss = hidden.sum() * 0.0
        if prompt_weight > 0:
            psel = batch.prompt_targets.to(device, non_blocking=True)
            pmask = psel != -100
            if pmask.any():
                plogits = model.lm_head(hidden[pmask]).float()
                loss = loss + prompt_weight * torch.nn.functional.cross_entropy(plogits,
                                                                                psel[pmask])
    rows = sel.nonzero()[:, 0]
    per_example = torch.zeros(ids.shape[0], device=device).index_add_(0, rows, tok_loss.detach())
    is_dir = batch.directive.to(device)[sel]
    wrong = (logits.detach().argmax(-1) != targets[sel]) & is_dir
    n_dir = torch.zeros(ids.shape[0], device=device).index_add_(0, rows, is_dir.float())
    n_wrong = torch.zeros(ids.shape[0], device=device).index_add_(0, rows, wrong.float())
    directive_ok = torch.where(n_dir > 0, (n_wrong == 0).float(), -1.0)
    return loss, per_example, directive_ok


def probe_repeat(model: Any, tok: Any, device: torch.device, block_size: int,
                 span: int = 100, digits: bool = False) -> dict[str, float]:
    """:func:`dac.train.probe.repeat_loss` under the training attention (logged with the loss):
    the repeat loss falling to near zero is the sign that copying (induction) heads formed.
    ``digits``: on random digit strings (what the retrieval tasks copy) instead."""
    from .probe import digit_ids, repeat_loss

    batch = max(4, 400 // span)  # about 400 tokens on each side, whatever the span
    mask = row_mask([AnswerMask(-1, [])] * batch, 1 + 2 * span, block_size, device)
    with use_mask(model, mask), torch.autocast(device.type, dtype=torch.bfloat16,
                                               enabled=device.type == "cuda"):
        return repeat_loss(model, tok.bos_token_id, tok.vocab_size, span=span, batch=batch,
                           pool=digit_ids(tok) if digits else None)


def stage_eta(done: int, total: int, elapsed: float, budget: float | None) -> float:
    """Seconds the stage has left: its remaining steps at the pace so far, or what is left of
    its time budget when that ends it first."""
    left = (total - done) * elapsed / max(1, done)
    if budget:
        left = min(left, max(0.0, budget - elapsed))
    return round(left, 1)


def train(cfg: TrainConfig, out: str | Path, *, init: str | Path | None = None,
          stages: tuple[int, int] | None = None, device: str | None = None,
          sample_fn: SampleFn | None = None, workers: int | None = None,
          tokenizer: str | Path | None = None,
          log: Callable[[dict[str, Any]], None] | None = None,
          save_dtype: torch.dtype = torch.float32) -> Path:
    """Train ``cfg`` into ``out`` (model dir + ``train_log.jsonl``); returns ``out``.

    ``init``: a model directory to continue from (its tokenizer is reused);
    ``stages``: the half-open range of curriculum stages to run (default: all);
    ``tokenizer``: a directory holding this config's tokenizer, built earlier (saves minutes);
    ``save_dtype``: the saved weights' dtype (training runs in float32 with bf16 autocast).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    from ..tasks import TASKS

    tasks = [t for t in (cfg.tasks or TASKS) if (cfg.tasks or {}).get(t, 1.0) > 0]
    named = set(tasks).union(*[set(s.tasks or {}) for s in cfg.stages])
    unknown = sorted(t for t in named if t not in TASKS)
    if unknown and sample_fn is None:
        raise ValueError(f"unknown tasks in config: {', '.join(unknown)}")
    for s in cfg.stages:
        if s.tasks is not None and not set(s.tasks) <= set(tasks):
            raise ValueError(f"stage of length {s.length} names tasks outside the config's mixture")
    sample_fn = sample_fn or default_sample_fn()
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    logf = open(out / "train_log.jsonl", "a")

    def emit(rec: dict[str, Any]) -> None:
        logf.write(json.dumps(rec) + "\n")
        logf.flush()
        if log:
            log(rec)

    t0 = time.time()
    warm_sources()
    if init:
        tok = AutoTokenizer.from_pretrained(init, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(init, local_files_only=True,
                                                     dtype=torch.float32)
        prior = json.loads((Path(init) / DAC_CONFIG).read_text()).get("training", {})
    else:
        tok = (AutoTokenizer.from_pretrained(tokenizer, local_files_only=True) if tokenizer
               else make_tokenizer(cfg, tasks, sample_fn))
        model = make_model(cfg, tok)
        prior = {}
    emit({"event": "start", "params": sum(p.numel() for p in model.parameters()),
          "vocab": len(tok), "device": str(dev), "tokenizer_s": round(time.time() - t0, 1),
          "gpu": torch.cuda.get_device_name(0) if dev.type == "cuda" else None})
    register()
    model.set_attn_implementation(ATTN_IMPLEMENTATION)
    model.to(dev)
    model.train()
    opt = make_optimizer(model, cfg, dev)
    lo, hi = stages or (0, len(cfg.stages))
    weights = [s.seconds or s.steps for s in cfg.stages]  # the LR schedule's time axis
    step = 0
    history = list(prior.get("stages", []))
    nw = cfg.workers if workers is None else workers
    for si in range(lo, hi):
        stage = cfg.stages[si]
        seg = segment(cfg, si)
        if stage.grow_layers and model.config.num_hidden_layers < stage.grow_layers:
            before = model.config.num_hidden_layers
            model = deepen(model.to("cpu"), stage.grow_layers)
            model.set_attn_implementation(ATTN_IMPLEMENTATION)
            model.to(dev)
            model.train()
            opt = make_optimizer(model, cfg, dev)
            emit({"event": "grow", "stage": si, "layers": [before, stage.grow_layers],
                  "params": sum(p.numel() for p in model.parameters())})
        if si == lo or stage.restart:
            if stage.restart and si > lo:
                opt = make_optimizer(model, cfg, dev)
            step = 0  # warmup again: a fresh (or freshly loaded) optimizer
        total_w = sum(weights[seg[0]:seg[1]]) or 1
        done_w = sum(weights[seg[0]:si])
        width, bsz = stage_shape(stage)
        data = StageData(cfg, stage, tok, tasks, seed_offset(cfg, si), bsz, width, sample_fn)
        loader = torch.utils.data.DataLoader(
            data, batch_size=bsz, shuffle=False, num_workers=nw,
            collate_fn=partial(collate, width=width, pad_id=tok.pad_token_id),
            prefetch_factor=4 if nw else None, pin_memory=dev.type == "cuda")
        ts = time.time()
        dropped, tokens = 0, 0
        stopped = False
        fam_loss: list[tuple[torch.Tensor, torch.Tensor, list[str]]] = []
        fam_dir: list[tuple[torch.Tensor, list[str]]] = []
        k = 0
        for k, batch in enumerate(loader):
            frac = k / max(1, stage.steps)
            if stage.seconds:
                frac = max(frac, (time.time() - ts) / stage.seconds)
                if frac >= 1.0:
                    break
            lr = lr_at(cfg, step, (done_w + frac * weights[si]) / total_w, cfg.stages[seg[0]].lr)
            for g in opt.param_groups:
                g["lr"] = lr
            loss, per_example, directive_ok = batch_loss(
                model, batch, dev, cfg.plan.block_size, stage.prompt_loss_weight,
                stage.directive_loss_weight)
            fam_loss.append((per_example, (batch.targets != -100).sum(1), batch.tasks))
            fam_dir.append((directive_ok, batch.tasks))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            dropped += batch.dropped
            tokens += int((batch.ids != tok.pad_token_id).sum())
            if (k + 1) % cfg.log_every == 0 or k + 1 == stage.steps:
                rec = {"event": "step", "stage": si, "stages": [lo, hi],
                       "length": stage.length, "step": k + 1, "of": stage.steps,
                       "eta_s": stage_eta(k + 1, stage.steps, time.time() - ts, stage.seconds),
                       "loss": round(loss.item(), 4), "lr": round(lr, 6),
                       "tok_per_s": round(tokens / max(1e-9, time.time() - ts)),
                       "elapsed_s": round(time.time() - t0, 1), "dropped": dropped,
                       "family_loss": family_losses(fam_loss),
                       "directive_acc": family_directive_acc(fam_dir),
                       "repeat_probe": probe_repeat(model, tok, dev, cfg.plan.block_size),
                       "digit_probe": probe_repeat(model, tok, dev, cfg.plan.block_size,
                                                   digits=True)}
                if stage.until_copy_loss is not None:
                    own = probe_repeat(model, tok, dev, cfg.plan.block_size,
                                       max(8, (stage.length - 1) // 2))
                    rec["stage_probe"] = own
                    stopped = own["repeat"] < stage.until_copy_loss
                emit(rec)
                fam_loss, fam_dir = [], []
                if stopped:
                    break
        ran = k + 1 if stage.steps else 0
        if (not stopped and stage.seconds and ran < stage.steps
                and time.time() - ts >= stage.seconds):
            ran = k  # the batch fetched when time ran out was not trained on
        del loader
        rec = {"stage": si, "length": stage.length, "layers": model.config.num_hidden_layers,
               "steps": ran, "batch": bsz,
               "width": width, "seconds": round(time.time() - ts, 1), "dropped": dropped,
               "copied": stopped}
        history.append(rec)
        emit({"event": "stage_done", **rec})
    model.eval()
    seconds = round(time.time() - t0, 1)
    save(model, tok, cfg, out, history, seconds + float(prior.get("seconds", 0.0)), dev,
         save_dtype)
    emit({"event": "done", "seconds": seconds, "out": str(out)})
    logf.close()
    return out


def save(model: Any, tok: Any, cfg: TrainConfig, out: Path, history: list[dict[str, Any]],
         seconds: float, dev: torch.device, dtype: torch.dtype = torch.float32) -> None:
    """Weights (sharded under 15 MB, so every file travels), tokenizer and ``dac_config.json``."""
    model.config._attn_implementation = "sdpa"
    model.to(dtype).save_pretrained(out, max_shard_size="15MB")
    model.to(torch.float32)
    tok.save_pretrained(out)
    meta = {
        "protocol": __import__("dac.protocol.prompt", fromlist=["x"]).PROTOCOL_VERSION,
        "plan": asdict(cfg.plan),
        "generation": {"max_new_tokens": cfg.max_new_tokens, "do_sample": False},
        "prompt": {"question_first": cfg.question_first},
        "training": {"config": cfg.to_dict(), "stages": history, "seconds": seconds,
                     "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else
                     platform.processor() or "cpu", "torch": torch.__version__},
    }
    (out / DAC_CONFIG).write_text(json.dumps(meta, indent=1) + "\n")


def plan_config(model_dir: str | Path) -> Any:
    """The :class:`PlanConfig` a model was trained under (``dac_config.json``), or ``None``."""
    from ..models import load_plan_config

    if not (Path(model_dir) / DAC_CONFIG).is_file():
        return None
    return load_plan_config(model_dir)
