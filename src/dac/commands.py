"""Core subcommands: ``dac generate``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .planning.blocks import PlanConfig
from .planning.policies import get_policy


def add_plan_args(p: argparse.ArgumentParser) -> None:
    """Options of :class:`PlanConfig`, shared by every command that decodes."""
    d = PlanConfig()
    g = p.add_argument_group("mask planning")
    g.add_argument("--block-size", type=int, default=d.block_size, help="KV block size in tokens")
    g.add_argument("--sink-tokens", type=int, default=d.sink_tokens,
                   help="first tokens always read")
    g.add_argument("--window", type=int, default=d.window,
                   help="recent tokens read in focus mode")
    g.add_argument("--local-window", type=int, default=d.local_window,
                   help="recent tokens read in local mode")


def plan_config(args: argparse.Namespace) -> PlanConfig:
    return PlanConfig(block_size=args.block_size, sink_tokens=args.sink_tokens,
                      window=args.window, local_window=args.local_window)


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
    add_plan_args(p)
    p.set_defaults(handler=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    from .engines.hf import generate
    from .models import load
    from .protocol.context import build_prompt, split_sections

    if not args.question.strip():
        raise ValueError("the question is empty")
    if args.max_new_tokens < 1:
        raise ValueError("--max-new-tokens must be at least 1")
    if args.section_chars < 16:
        raise ValueError("--section-chars must be at least 16")
    policy = get_policy(args.policy)
    cfg = plan_config(args)
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
    layout = build_prompt(tok, sections, args.question)
    result = generate(model, tok, [layout], policy=policy, config=cfg,
                      max_new_tokens=args.max_new_tokens)[0]
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
    from rich.table import Table

    con = Console()
    con.print(f"[bold]answer[/bold]: {payload['answer']}")
    if payload["timeline"]:
        t = Table(title="directive timeline")
        for col in ("step", "event", "mode", "region", "text"):
            t.add_column(col)
        for e in payload["timeline"]:
            region = ",".join(f"S{s}" for s in e["sections"]) if e["sections"] else (
                f"last {e['window']}" if e["window"] else "")
            t.add_row(str(e["step"]), e["kind"], e["mode"] or "", region, e["text"])
        con.print(t)
    else:
        con.print("no directives: global attention throughout")
    kv = payload["kv"]
    con.print(f"KV read: {kv['read']:.0f} of {kv['full']} tokens over {kv['decode_steps']} decode "
              f"steps = [bold]{kv['fraction']:.1%}[/bold] of full attention "
              f"(policy {payload['policy']}, {payload['sections']} sections, "
              f"{payload['prompt_tokens']} prompt tokens)")
