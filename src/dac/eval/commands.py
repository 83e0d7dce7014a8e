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
    p.add_argument("--model", help="a transformers model directory, a .gguf file, a "
                   "catalog name (dac models list) or a hub id")
    p.add_argument("--tasks", default=None,
                   help="comma list of tasks or families (retrieval, multi, aggregation, "
                   "local); default all (none when --source is given)")
    p.add_argument("--lengths", default="4k", help="prompt lengths in tokens, e.g. 4k,8k,16k")
    p.add_argument("--policies", default=None,
                   help="policy specs, e.g. full,dac,streaming,quest:budget=0.2 (default "
                   "full,dac,streaming,quest; with --source: --arms paper)")
    p.add_argument("--arms", default=None,
                   help="arms, each a prompt protocol and a policy: vanilla, da-nm, da (the "
                   "paper's three; 'paper' is all three) or PROTOCOL/POLICY, e.g. "
                   "vanilla,da-nm,da,da/quest:budget=0.1 (replaces --policies)")
    p.add_argument("--source", action="append", default=[], metavar="NAME",
                   help="a paper source (dac eval --list-sources); repeat or comma-separate. "
                   "'all' is every source found in --data DIR")
    p.add_argument("--data", action="append", default=[], metavar="PATH",
                   help="the source's data file (one per --source, in order), or one folder "
                   "holding each source's file under its published name (docs/sources.md). "
                   "A RULER source without data is generated offline at --lengths")
    p.add_argument("--budget", default="244k",
                   help="sources: drop contexts over this many tokens (the evaluated model's "
                   "tokenizer) before drawing --samples examples with --seed (default 244k, "
                   "the paper's)")
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
    p.add_argument("--list-sources", action="store_true",
                   help="print the paper sources (family, metric, expected file) and exit")
    p.add_argument("--report", action="store_true", help="also write the report at the end")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_protocol_arg(p)
    add_bound_arg(p)
    add_plan_args(p)
    g = p.add_argument_group("sampling (default: greedy)")
    g.add_argument("--temperature", type=float, help="sample at this temperature (0: greedy)")
    g.add_argument("--top-p", type=float)
    g.add_argument("--top-k", type=int)
    g.add_argument("--presence-penalty", type=float)
    g.add_argument("--sampling", choices=["greedy", "model", "qwen", "gemma"], default=None,
                   help="a preset: greedy; model (the model's generation_config.json); qwen "
                   "(the paper's: temperature 0.7, top-p 0.8, top-k 20, presence penalty 1.5) "
                   "or gemma (temperature 1.0, top-p 0.95, top-k 64). A sampled run is seeded "
                   "with --seed, so it repeats")
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
    generated = config.tasks + [s for s, data in config.sources.items() if not data]
    if generated:
        worst = max(int(n * (1 + LENGTH_TOLERANCE)) + max(config.new_tokens(t)
                                                           for t in generated)
                    for n in config.lengths)
        if worst > limit:
            raise ValueError(f"the model holds {limit} positions; the longest prompts need up "
                             f"to {worst} (length + 5% + new tokens): lower --lengths")
    if any(config.sources.values()):
        room = limit - config.new_tokens("")
        if room < 64:
            raise ValueError(f"the model holds {limit} positions: too few for a source's "
                             f"context and its {config.new_tokens('')} new tokens")
        if config.budget > room:
            print(f"dac: the model holds {limit} positions: the sources' budget is lowered "
                  f"from {config.budget} to {room} tokens (its limit less the new tokens; "
                  "an example whose whole prompt does not fit is dropped too)",
                  file=sys.stderr)
            config.budget = room


def list_tasks() -> None:
    """One line per task: name, family, RULER's name where the task is RULER's."""
    from ..tasks import task_table

    rows = task_table()
    width = max(len(r["task"]) for r in rows)
    print(f"{'task':<{width}}  {'family':<11}  {'RULER':<15}  description")
    for r in rows:
        print(f"{r['task']:<{width}}  {r['family']:<11}  {r['ruler'] or '-':<15}  "
              f"{r['description']}")


#: the paper's sampling per model family
SAMPLING_PRESETS = {
    "greedy": {},
    "qwen": {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "presence_penalty": 1.5},
    "gemma": {"temperature": 1.0, "top_p": 0.95, "top_k": 64},
}


def eval_sampling(args: argparse.Namespace, model_default: dict[str, Any]) -> dict[str, Any]:
    """A run's sampling: the preset (``model``: the model's own), then the options given;
    a sampled run is seeded with ``--seed`` so that a resumed run repeats."""
    from ..runtime import Sampling

    preset = args.sampling or "greedy"
    if preset == "model":
        own = Sampling.of(model_default or None).to_dict()
        base = own if own.get("do_sample") else {}
    else:
        base = dict(SAMPLING_PRESETS[preset])
    given = {k: getattr(args, k) for k in ("temperature", "top_p", "top_k", "presence_penalty")
             if getattr(args, k, None) is not None}
    merged = {k: v for k, v in {**base, **given}.items() if k != "do_sample"}
    if merged.get("temperature") == 0 or not merged:
        return {}
    return Sampling.of({**merged, "do_sample": True, "seed": args.seed}).to_dict()


def list_sources() -> None:
    """One line per paper source: name, family, span, metric, what it is."""
    from .sources import list_sources as rows_of

    rows = rows_of()
    width = max(len(r["name"]) for r in rows)
    print(f"{'source':<{width}}  {'family':<12}  {'span':<6}  {'metric':<10}  description")
    for r in rows:
        print(f"{r['name']:<{width}}  {r['family']:<12}  {r['span']:<6}  {r['metric']:<10}  "
              f"{r['description']}")


def source_data(names: list[str], data: list[str]) -> dict[str, str]:
    """``--source``/``--data`` as ``{source: data file}`` (``""``: generated offline).

    ``--data`` gives one file per source in order, or one folder where each source's file is
    found under its published name; ``--source all`` takes every source found there."""
    names = [n.strip() for item in names for n in item.split(",") if n.strip()]
    if not names:
        if data:
            raise ValueError("--data needs --source (dac eval --list-sources)")
        return {}
    from .sources import SOURCES, find_data
    folder = Path(data[0]) if len(data) == 1 and Path(data[0]).is_dir() else None
    if names == ["all"]:
        if folder is None:
            raise ValueError("--source all needs --data FOLDER")
        found = {n: find_data(n, folder) for n in SOURCES}
        out = {n: str(p) for n, p in found.items() if p is not None}
        if not out:
            raise ValueError(f"no source's data file found in {folder} (docs/sources.md)")
        return out
    for n in names:
        if n not in SOURCES:
            raise ValueError(f"unknown source {n!r}; see dac eval --list-sources")
    if folder is not None:
        out = {}
        for n in names:
            path = find_data(n, folder)
            if path is None and not n.startswith("ruler."):
                raise FileNotFoundError(f"no data file for {n} in {folder} (docs/sources.md "
                                        "gives each source's file name)")
            out[n] = str(path) if path is not None else ""
        return out
    if data and len(data) != len(names):
        raise ValueError(f"{len(names)} --source but {len(data)} --data: give one data file "
                         "per source, or one folder")
    out = {}
    for i, n in enumerate(names):
        path = data[i] if data else ""
        if not path and not n.startswith("ruler."):
            raise ValueError(f"{n} needs --data: only RULER sources are generated offline")
        if path and not Path(path).exists():
            raise FileNotFoundError(f"--data {path}: no such file")
        out[n] = path
    return out


def run_eval_command(args: argparse.Namespace) -> int:
    from ..models import load_defaults, resolve_model, weights_fingerprint
    from ..planning.blocks import PlanConfig
    from .config import EvalConfig, parse_arms, parse_length
    from .runner import run_eval

    if args.list_tasks:
        list_tasks()
        return 0
    if args.list_sources:
        list_sources()
        return 0
    if not args.model or not args.out:
        raise ValueError("dac eval needs --model and --out (or --list-tasks, --list-sources)")
    sources = source_data(args.source, args.data)
    if args.arms and args.policies:
        raise ValueError("give --arms or --policies, not both")
    if args.arms:
        policies = parse_arms(args.arms)
    else:
        policies = args.policies or ("paper" if sources else "full,dac,streaming,quest")
        policies = parse_arms(policies)
    tasks = args.tasks if args.tasks is not None else ("" if sources else "all")
    plan_config(args, PlanConfig())  # validate the options before loading anything
    model_dir = resolve_model(args.model)  # a directory, .gguf, catalog name or hub id
    defaults = load_defaults(model_dir)
    plan = plan_config(args, defaults.plan) if defaults else PlanConfig()
    protocol = args.protocol or (defaults.protocol if defaults else "da")
    sampling = eval_sampling(args, defaults.sampling if defaults else {})
    config = EvalConfig(model=str(args.model), tasks=tasks, lengths=args.lengths,
                        policies=policies, samples=args.samples, seed=args.seed,
                        batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                        engine=args.engine, bound_sections=args.bound_sections,
                        plan=dataclasses.asdict(plan),
                        prompt=defaults.prompt if defaults and protocol == "brackets" else {},
                        weights=weights_fingerprint(model_dir), protocol=protocol,
                        sources=sources, budget=parse_length(args.budget),
                        sampling=sampling)
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} exists and is not a folder")
    engine = make_engine(args.engine, str(model_dir), args.device, plan.block_size)
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
