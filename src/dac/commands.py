"""Core subcommands: ``dac generate``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from .planning.blocks import PlanConfig
from .planning.policies import get_policy


_PLAN_ARGS = ("block_size", "sink_tokens", "window", "local_window")


def add_plan_args(p: argparse.ArgumentParser) -> None:
    """Options of :class:`PlanConfig`, shared by every command that decodes. Unset options
    take the model's own defaults (``dac_config.json`` in its folder), else PlanConfig's."""
    d = PlanConfig()
    g = p.add_argument_group("mask planning (default: the model's dac_config.json)")
    g.add_argument("--block-size", type=int, help=f"KV block size in tokens ({d.block_size})")
    g.add_argument("--sink-tokens", type=int, help=f"first tokens always read ({d.sink_tokens})")
    g.add_argument("--window", type=int, help=f"recent tokens read in focus mode ({d.window})")
    g.add_argument("--local-window", type=int,
                   help=f"recent tokens read in local mode ({d.local_window})")


def add_bound_arg(p: argparse.ArgumentParser) -> None:
    """``--no-bound-sections``, shared by every command that decodes under a policy."""
    p.add_argument("--no-bound-sections", dest="bound_sections", action="store_false",
                   help="let the model write focus directives naming sections the prompt "
                   "lacks (by default such directive tokens are impossible for policies that "
                   "read directives; the parser would drop them and fall back to global)")


def plan_config(args: argparse.Namespace, base: PlanConfig) -> PlanConfig:
    """``base`` with the options given on the command line (validated by PlanConfig)."""
    given = {k: getattr(args, k) for k in _PLAN_ARGS if getattr(args, k, None) is not None}
    return replace(base, **given)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("generate", help="answer a question about a document under a policy",
                       description="Answer a question about a long document; print the answer, "
                       "the directive timeline and the fraction of KV read.")
    p.add_argument("--model", required=True, help="local transformers model directory")
    p.add_argument("--context", required=True, help="text file with the document")
    p.add_argument("--question", required=True)
    p.add_argument("--policy", default="dac",
                   help="full, dac, streaming, quest or oracle; options as quest:budget=0.2")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--section-chars", type=int, default=1200,
                   help="target section size when splitting the document")
    p.add_argument("--device", default=None, help="e.g. cpu or cuda")
    p.add_argument("--json", action="store_true", help="print one JSON object (stable schema)")
    add_bound_arg(p)
    add_plan_args(p)
    p.set_defaults(handler=run_generate)
    add_demo_parser(sub)


def run_generate(args: argparse.Namespace) -> int:
    from .engines.hf import generate
    from .models import load, load_plan_config, load_prompt_options
    from .protocol.context import build_prompt, split_sections

    if not args.question.strip():
        raise ValueError("the question is empty")
    if args.max_new_tokens < 1:
        raise ValueError("--max-new-tokens must be at least 1")
    if args.section_chars < 16:
        raise ValueError("--section-chars must be at least 16")
    policy = get_policy(args.policy)
    plan_config(args, PlanConfig())  # validate the options before loading anything
    path = Path(args.context)
    if not path.is_file():
        raise FileNotFoundError(f"context file not found: {args.context}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"context file is not UTF-8 text: {args.context}") from None
    sections = split_sections(text, args.section_chars)
    if not sections:
        raise ValueError(f"context file is empty: {args.context}")
    model, tok = load(args.model, device=args.device)
    cfg = plan_config(args, load_plan_config(args.model))
    layout = build_prompt(tok, sections, args.question, **load_prompt_options(args.model))
    result = generate(model, tok, [layout], policy=policy, config=cfg,
                      max_new_tokens=args.max_new_tokens, bound_sections=args.bound_sections)[0]
    payload = result.to_dict()
    payload.update({"policy": policy.name, "model": str(args.model),
                    "sections": layout.num_sections, "block_size": cfg.block_size})
    if args.json:
        json.dump(payload, sys.stdout)
        sys.stdout.write("\n")
        return 0
    print_result(payload)
    return 0


def print_result(payload: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    con = Console()
    con.print(f"[bold]answer[/bold]: {escape(payload['answer'])}")
    if payload["timeline"]:
        t = Table(title="directive timeline")
        for col in ("step", "event", "mode", "region", "text"):
            t.add_column(col)
        for e in payload["timeline"]:
            region = ",".join(f"S{s}" for s in e["sections"]) if e["sections"] else (
                f"last {e['window']}" if e["window"] else "")
            t.add_row(str(e["step"]), e["kind"], e["mode"] or "", region, escape(e["text"]))
        con.print(t)
    else:
        con.print("no directives: global attention throughout")
    kv = payload["kv"]
    con.print(f"KV read: {kv['read']:.0f} of {kv['full']} tokens over {kv['decode_steps']} decode "
              f"steps = [bold]{kv['fraction']:.1%}[/bold] of full attention "
              f"(policy {payload['policy']}, {payload['sections']} sections, "
              f"{payload['prompt_tokens']} prompt tokens)")


# -- dac demo ------------------------------------------------------------------------------
DEFAULT_MODEL = Path(__file__).parent / "assets" / "dac-tiny"


def add_demo_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="the embedded demonstration (default model, one long document)",
                       description="Generate a long document with a hidden fact, ask about it, and "
                       "show the model's directives, the answer, the KV fraction read under DAC "
                       "versus full attention, and a picture of what each decode step read.")
    p.add_argument("--model", default=None,
                   help="model directory (default: the bundled demonstration model)")
    p.add_argument("--task", default="niah_single_prose", help="task generator (see dac eval --help)")
    p.add_argument("--length", type=int, default=4096, help="prompt length in tokens")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", default="runs/demo", help="folder for the picture and JSON")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from .engines.hf import generate
    from .eval.records import make_record
    from .eval.report import plot_timeline
    from .models import load, load_plan_config, load_prompt_options, tiny_model, tiny_tokenizer
    from .tasks import TASKS, make_sample

    if args.task not in TASKS:
        raise ValueError(f"unknown task {args.task!r}; choose from {', '.join(TASKS)}")
    if args.length < 64:
        raise ValueError("--length must be at least 64")
    notice = ""
    model_dir = Path(args.model) if args.model else DEFAULT_MODEL
    if args.model or (DEFAULT_MODEL / "config.json").is_file():
        model, tok = load(model_dir)
        cfg = load_plan_config(model_dir)
        prompt = load_prompt_options(model_dir)
        name = model_dir.name
    else:
        notice = ("no trained demonstration model is bundled: using a random-weight model "
                  "(directives and answers will be noise; the pipeline is real)")
        tok = tiny_tokenizer()
        model = tiny_model("llama", vocab_size=len(tok), max_positions=args.length * 2 + 256)
        cfg = PlanConfig()
        prompt = {}
        name = "random-tiny-llama"
    # a random model says nothing worth reading: make it write a full-length answer anyway
    extra = {"min_new_tokens": TASKS[args.task].max_new_tokens} if notice else {}
    spec = TASKS[args.task]
    sample = make_sample(args.task, tok, args.length, args.seed)
    layout = sample.layout(tok, **prompt)
    evidence = sample.evidence_spans(layout)
    records = {}
    for pol in ("dac", "full"):
        t0 = time.perf_counter()
        res = generate(model, tok, [layout], policy=pol, config=cfg,
                       max_new_tokens=spec.max_new_tokens, evidence=[evidence], **extra)[0]
        records[pol] = make_record(sample, layout, evidence, res, pol, cfg.block_size,
                                   time.perf_counter() - t0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    png = out / "timeline.png"
    plot_timeline(list(records.values()), png)
    payload = {"model": name, "notice": notice, "question": sample.question,
               "expected": sample.answers, "ideal": sample.led_target,
               "evidence_sections": sorted({s for s, _, _ in sample.evidence}),
               "runs": records, "timeline_png": str(png)}
    (out / "demo.json").write_text(json.dumps(payload, indent=2))
    if args.json:
        json.dump(payload, sys.stdout)
        sys.stdout.write("\n")
        return 0
    from rich.console import Console
    from rich.markup import escape

    con = Console()
    if notice:
        con.print(f"[yellow]note:[/yellow] {notice}")
    dac = records["dac"]
    con.print(f"[bold]{name}[/bold] on {args.task}: {layout.prompt_len} prompt tokens in "
              f"{layout.num_sections} sections; the fact sits in section(s) "
              f"{', '.join(f'S{s}' for s in payload['evidence_sections'])}")
    con.print(f"[bold]question[/bold]: {escape(sample.question)}")
    con.print(f"[bold]expected[/bold]: {escape(', '.join(sample.answers))}")
    print_result({"answer": dac["answer"], "timeline": dac["directives"], "kv": {
        **dac["kv"], "decode_steps": len(dac["kv"]["per_step"])}, "policy": "dac",
        "sections": layout.num_sections, "prompt_tokens": layout.prompt_len})
    full = records["full"]
    con.print(f"score under DAC: {dac['score']:.2f}   under full attention: "
              f"{full['score']:.2f} (answer: {escape(repr(full['answer']))})")
    con.print(f"picture of what each decode step read: {png}")
    return 0
