"""``dac train``: train a protocol-following model from a config in ``configs/``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="train a small protocol-following model (dac-tiny recipe)",
                       description="Train tokenizer + Llama model on the suite's generators, "
                       "answers under the mask their directive implies. Reproducible: "
                       "everything is fixed by the config (seeds included).")
    p.add_argument("--config", required=True, help="training config JSON (e.g. configs/dac-tiny-focus-weight.json)")
    p.add_argument("--out", default=None, help="output model directory (default: runs/<name>)")
    p.add_argument("--init", default=None, help="continue from this model directory")
    p.add_argument("--stages", default=None,
                   help="curriculum stages to run, as START:END (half-open; default all)")
    p.add_argument("--tokenizer", default=None,
                   help="reuse the tokenizer in this directory instead of training it")
    p.add_argument("--tokenizer-only", action="store_true",
                   help="only train the tokenizer and save it to --out")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--workers", type=int, default=None, help="data worker processes")
    p.add_argument("--quiet", action="store_true", help="do not print progress")
    p.add_argument("--log-json", action="store_true",
                   help="print the raw log records (train_log.jsonl's lines) instead of progress")
    p.add_argument("--save-dtype", choices=("float32", "bfloat16"), default="float32",
                   help="dtype of the saved weights (bfloat16: half the size, as shipped)")
    p.set_defaults(handler=run_train)


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def progress_line(rec: dict[str, Any]) -> None:
    """One readable line per log record: the stage, its steps of the total, the loss and the
    time the stage has left (the full record is in train_log.jsonl)."""
    ev = rec.get("event")
    if ev == "step":
        lo, hi = rec.get("stages", [rec["stage"], rec["stage"] + 1])
        print(f"stage {rec['stage'] - lo + 1}/{hi - lo} ({rec['length']} tokens)  step "
              f"{rec['step']}/{rec['of']}  loss {rec['loss']:.3f}  {rec['tok_per_s']} tok/s  "
              f"elapsed {_duration(rec['elapsed_s'])}  stage ETA {_duration(rec['eta_s'])}",
              flush=True)
    elif ev == "start":
        print(f"training {rec['params'] / 1e6:.1f}M parameters on {rec['device']}", flush=True)
    elif ev == "stage_done":
        print(f"stage {rec['stage']} done: {rec['steps']} steps in {_duration(rec['seconds'])}",
              flush=True)
    elif ev == "grow":
        print(f"grew the model to {rec['layers'][1]} layers", flush=True)


def _stages(spec: str | None, n: int) -> tuple[int, int] | None:
    if spec is None:
        return None
    lo, sep, hi = spec.partition(":")
    try:
        a = int(lo) if lo else 0
        b = int(hi) if sep and hi else (n if sep else a + 1)
    except ValueError:
        raise ValueError(f"--stages must look like 0:3, got {spec!r}") from None
    if not 0 <= a < b <= n:
        raise ValueError(f"--stages {spec!r} is outside the config's {n} stages")
    return a, b


def run_train(args: argparse.Namespace) -> int:
    import torch

    from .config import TrainConfig
    from .loop import make_tokenizer, train

    cfg = TrainConfig.load(args.config)
    out = Path(args.out or Path("runs") / cfg.name)
    init = args.init
    if init:
        from ..models import ModelLoadError, resolve_model

        try:
            init = str(resolve_model(init))  # a directory, .gguf or catalog name
        except ModelLoadError as e:
            raise FileNotFoundError(f"--init directory not found: {args.init}"
                                    if "not found:" in str(e) else f"--init: {e}") from None
    if args.tokenizer and not Path(args.tokenizer).is_dir():
        raise FileNotFoundError(f"--tokenizer directory not found: {args.tokenizer}")
    if args.tokenizer_only:
        from ..tasks import TASKS, make_sample

        tasks = [t for t in (cfg.tasks or TASKS) if (cfg.tasks or {}).get(t, 1.0) > 0]
        tok = make_tokenizer(cfg, tasks, make_sample)
        out.mkdir(parents=True, exist_ok=True)
        tok.save_pretrained(out)
        print(f"tokenizer ({len(tok)} tokens) saved to {out}")
        return 0
    if args.quiet:
        log = None
    elif args.log_json:
        log = lambda rec: print(json.dumps(rec), flush=True)  # noqa: E731
    else:
        log = progress_line
    train(cfg, out, init=init, stages=_stages(args.stages, len(cfg.stages)),
          device=args.device, workers=args.workers, tokenizer=args.tokenizer, log=log,
          save_dtype=getattr(torch, args.save_dtype))
    print(f"model saved to {out}")
    return 0
