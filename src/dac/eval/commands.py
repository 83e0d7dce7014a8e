"""``dac eval`` (run the long-context suite) and ``dac report`` (HTML page and figures)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

from ..commands import add_bound_arg, add_plan_args, add_protocol_arg, plan_config

#: the engines ``dac eval --engine`` runs on
ENGINES = ("hf", "fast", "vllm")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "eval", help="run the offline long-context suite against policies",
        description="Evaluate a model on the long-context tasks under several attention "
        "policies. Resumable: cells already finished in --out are skipped.")
    p.add_argument("--model", help="local transformers model directory")
    p.add_argument("--tasks", default="all",
                   help="comma list of tasks or families (retrieval, multi, aggregation, "
                   "local); default all")
    p.add_argument("--lengths", default="4k", help="prompt lengths in tokens, e.g. 4k,8k,16k")
    p.add_argument("--policies", default="full,dac,streaming,quest",
                   help="policy specs, e.g. full,dac,streaming,quest:budget=0.2")
    p.add_argument("--samples", type=int, default=10, help="samples per task and length")
    p.add_argument("--seed", type=int, default=0, help="first sample seed")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="override every task's answer budget")
    p.add_argument("--engine", default="hf", choices=list(ENGINES),
                   help="hf: the reference engine (transformers generate; records every "
                   "step's evidence recall, per head for Quest); fast: static KV cache and "
                   "FlexAttention over the kept blocks, CUDA graphs on a GPU (eager on a CPU; "
                   "the same records, but Quest's per-step evidence recall is not measured); "
                   "vllm: the vLLM engine (optional dependency)")
    p.add_argument("--device", default=None,
                   help="e.g. cpu or cuda (hf and fast engines; fast: cuda when available)")
    p.add_argument("--out", help="run folder (created; resumed if it exists)")
    p.add_argument("--list-tasks", action="store_true",
                   help="print the tasks (family, RULER's name where it is RULER's) and exit")
    p.add_argument("--report", action="store_true", help="also write the report at the end")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_protocol_arg(p)
    add_bound_arg(p)
    add_plan_args(p)
    p.set_defaults(handler=run_eval_command)

    r = sub.add_parser("report", help="write the HTML report and figures of an eval run",
                       description="Write DIR/report/index.html and PNG figures from a run.")
    r.add_argument("dir", help="a folder written by dac eval")
    r.add_argument("--timelines", type=int, default=3,
                   help="samples drawn as a per-step timeline of what was read")
    r.set_defaults(handler=run_report_command)


def make_engine(name: str, model_path: str, device: str | None, block_size: int) -> Any:
    """The engine ``name`` (one of :data:`ENGINES`) on the model at ``model_path``."""
    if name not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {name!r}")
    if name == "vllm":
        try:
            from ..engines.vllm.engine import VLLMEngine
        except ImportError as e:
            raise RuntimeError(f"the vllm engine is not available: {e}") from None
        return VLLMEngine(model_path, block_size=block_size)  # vLLM's KV block = DAC's block
    from ..models import load

    if name == "fast":
        import torch

        from ..engines.fast import FastEngine

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model, tok = load(model_path, device=device)
        return FastEngine(model, tok)
    from ..engines.base import HFEngine

    model, tok = load(model_path, device=device)
    return HFEngine(model, tok)


def check_fits(engine: Any, config: Any) -> None:
    """Refuse lengths the model cannot hold before spending time on other cells."""
    from ..engines.support import max_positions
    from ..tasks import LENGTH_TOLERANCE

    model = getattr(engine, "model", None)
    limit = max_positions(model) if model is not None else getattr(engine, "max_model_len", None)
    if limit is None:
        return
    worst = max(int(n * (1 + LENGTH_TOLERANCE)) + max(config.new_tokens(t)
                                                       for t in config.tasks)
                for n in config.lengths)
    if worst > limit:
        raise ValueError(f"the model holds {limit} positions; the longest prompts need up to "
                         f"{worst} (length + 5% + new tokens): lower --lengths")


def list_tasks() -> None:
    """One line per task: name, family, RULER's name where the task is RULER's."""
    from ..tasks import task_table

    rows = task_table()
    width = max(len(r["task"]) for r in rows)
    print(f"{'task':<{width}}  {'family':<11}  {'RULER':<15}  description")
    for r in rows:
        print(f"{r['task']:<{width}}  {r['family']:<11}  {r['ruler'] or '-':<15}  "
              f"{r['description']}")


def run_eval_command(args: argparse.Namespace) -> int:
    from ..models import load_defaults, weights_fingerprint
    from ..planning.blocks import PlanConfig
    from .config import EvalConfig
    from .runner import run_eval

    if args.list_tasks:
        list_tasks()
        return 0
    if not args.model or not args.out:
        raise ValueError("dac eval needs --model and --out (or --list-tasks)")
    plan_config(args, PlanConfig())  # validate the options before loading anything
    defaults = load_defaults(args.model) if Path(args.model).is_dir() else None
    plan = plan_config(args, defaults.plan) if defaults else PlanConfig()
    protocol = args.protocol or (defaults.protocol if defaults else "da")
    config = EvalConfig(model=str(args.model), tasks=args.tasks, lengths=args.lengths,
                        policies=args.policies, samples=args.samples, seed=args.seed,
                        batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                        engine=args.engine, bound_sections=args.bound_sections,
                        plan=dataclasses.asdict(plan),
                        prompt=defaults.prompt if defaults and protocol == "brackets" else {},
                        weights=weights_fingerprint(args.model), protocol=protocol)
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} exists and is not a folder")
    engine = make_engine(args.engine, args.model, args.device, plan.block_size)
    check_fits(engine, config)
    t0 = time.perf_counter()
    metrics = run_eval(engine, config, args.out, progress=not args.no_progress,
                       log=lambda m: print(m, file=sys.stderr))
    print_summary(metrics)
    print(f"wrote {args.out}/metrics.json ({len(metrics['cells'])} cells, "
          f"{time.perf_counter() - t0:.1f} s)")
    if args.report:
        from .report import write_report

        page = write_report(args.out)
        print(f"wrote {page}")
    return 0


def print_summary(metrics: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    def fmt(x: float | None, digits: int) -> str:
        return "-" if x is None else f"{x:.{digits}f}"

    nets = any(r.get("safety_fired") is not None for r in metrics["by_family"])
    t = Table(title="by family and policy (mean over tasks and lengths)")
    cols = ["family", "policy", "accuracy", "cost", "evidence recall", "adherence"]
    for col in cols + (["safety fired"] if nets else []):
        t.add_column(col)
    for row in metrics["by_family"]:
        cells = [row["family"], row["policy"], fmt(row["accuracy"], 3), fmt(row["cost"], 3),
                 fmt(row["evidence_recall"], 3), fmt(row["adherence"], 2)]
        t.add_row(*cells, *([fmt(row.get("safety_fired"), 2)] if nets else []))
    Console(stderr=False).print(t)


def run_report_command(args: argparse.Namespace) -> int:
    from .report import write_report

    if not Path(args.dir).is_dir():
        raise FileNotFoundError(f"run folder not found: {args.dir}")
    page = write_report(args.dir, timelines=args.timelines)
    print(f"wrote {page}")
    return 0
