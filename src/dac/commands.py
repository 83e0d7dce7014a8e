"""Core subcommands: ``dac generate``."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from .planning.blocks import PlanConfig
from .planning import get_policy


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


def add_protocol_arg(p: argparse.ArgumentParser) -> None:
    """``--protocol``, shared by every command that builds prompts."""
    p.add_argument("--protocol", choices=("da", "brackets", "vanilla"), default=None,
                   help="how the context is delivered and directives written: da (the "
                   "paper's tags over magic chunks), brackets ([[focus S3]] over numbered "
                   "sections) or vanilla (inline, no directives); default: the model's "
                   "dac_config.json, else da")


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    """Sampling options; unset ones take the model's generation config (greedy otherwise)."""
    g = p.add_argument_group("sampling (default: the model's generation_config.json, else greedy)")
    g.add_argument("--greedy", action="store_true", help="greedy decoding, whatever the model says")
    g.add_argument("--temperature", type=float, help="sample at this temperature (0: greedy)")
    g.add_argument("--top-p", type=float)
    g.add_argument("--top-k", type=int)
    g.add_argument("--presence-penalty", type=float)
    g.add_argument("--seed", type=int, help="seed a sampled run (repeatable)")


def sampling_of(args: argparse.Namespace, base: dict[str, Any]) -> Any:
    """The :class:`~dac.runtime.Sampling` of a command: ``base`` (the model's) with the
    options given on the command line."""
    from .runtime import Sampling

    if getattr(args, "greedy", False):
        return Sampling()
    given = {k: getattr(args, k) for k in ("temperature", "top_p", "top_k",
                                           "presence_penalty", "seed")
             if getattr(args, k, None) is not None}
    if not given:
        return Sampling.of(base)
    merged = {k: v for k, v in base.items() if k != "do_sample"} | given
    if given.get("temperature") == 0:
        return Sampling()
    return Sampling.of({**merged, "do_sample": True})


def add_parser(sub: Any) -> None:
    p = sub.add_parser("generate", help="answer a question about a document under a policy",
                       description="Answer a question about a long document; print the answer, "
                       "the directive timeline, the KV read against full attention, and the "
                       "response's stats (attended tokens, decode steps, modes, focus).")
    p.add_argument("--model", required=True, help="a transformers model directory, a .gguf "
                   "file, a catalog name (dac models list) or a hub id")
    p.add_argument("--context", required=True, help="text file with the document")
    p.add_argument("--question", required=True)
    p.add_argument("--policy", default="dac",
                   help="full, dac, streaming, quest or oracle; options as quest:budget=0.2")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--section-chars", type=int, default=1200,
                   help="brackets: target section size in characters")
    p.add_argument("--chunk-tokens", type=int, default=2048,
                   help="da: target magic-chunk size in tokens (cap: 1.25x)")
    p.add_argument("--thinking", action="store_true",
                   help="da / vanilla: leave the chat template's thinking mode on")
    p.add_argument("--device", default=None, help="e.g. cpu or cuda")
    p.add_argument("--json", action="store_true", help="print one JSON object (stable schema)")
    add_protocol_arg(p)
    add_bound_arg(p)
    add_plan_args(p)
    add_sampling_args(p)
    p.set_defaults(handler=run_generate)

    m = sub.add_parser("model-info", help="a model's decode cost constants from its config",
                       description="Global layers, their KV bytes per token, and the fixed "
                       "bytes the sliding-window or linear-attention layers read per decode "
                       "step (bf16), from a config.json or a model directory.")
    m.add_argument("config", help="config.json or a model directory")
    m.add_argument("--json", action="store_true", help="print one JSON object")
    m.set_defaults(handler=run_model_info)


def run_model_info(args: argparse.Namespace) -> int:
    from .costs import cost_constants, read_config

    info = cost_constants(read_config(args.config))
    if args.json:
        json.dump(info, sys.stdout)
        sys.stdout.write("\n")
        return 0
    kinds = [f"{info['global_layers']} global"]
    if info["sliding_layers"]:
        kinds.append(f"{info['sliding_layers']} sliding-window (window {info['sliding_window']})")
    if info["linear_layers"]:
        kinds.append(f"{info['linear_layers']} linear-attention")
    print(f"layers: {info['layers']} ({', '.join(kinds)})")
    print(f"global KV per token: {info['global_kv_bytes_per_token']:,} B")
    print(f"local read per decode step: {info['local_bytes_per_step'] / 1e6:,.2f} MB")
    return 0


def run_generate(args: argparse.Namespace) -> int:
    from .engines.hf import generate
    from .models import load, load_defaults, resolve_model
    from .protocol.base import get_protocol

    if not args.question.strip():
        raise ValueError("the question is empty")
    if args.max_new_tokens < 1:
        raise ValueError("--max-new-tokens must be at least 1")
    if args.section_chars < 16:
        raise ValueError("--section-chars must be at least 16")
    if args.chunk_tokens < 16:
        raise ValueError("--chunk-tokens must be at least 16")
    policy = get_policy(args.policy)
    sampling_of(args, {})  # validate before loading anything
    plan_config(args, PlanConfig())  # validate the options before loading anything
    path = Path(args.context)
    if not path.is_file():
        raise FileNotFoundError(f"context file not found: {args.context}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"context file is not UTF-8 text: {args.context}") from None
    model_dir = resolve_model(args.model)  # a directory, .gguf, catalog name or hub id
    defaults = load_defaults(model_dir)
    name = args.protocol or defaults.protocol
    if name == "brackets" and not text.strip():
        raise ValueError(f"context file is empty: {args.context}")
    model, tok = load(model_dir, device=args.device)
    cfg = plan_config(args, defaults.plan)
    protocol = get_protocol(name)
    if name == "brackets":
        opts: dict[str, Any] = dict(defaults.prompt, max_chars=args.section_chars)
    else:
        opts = {"thinking": args.thinking}
        if name == "da":
            opts.update(target=args.chunk_tokens, cap=args.chunk_tokens * 5 // 4)
    layout = protocol.build_prompt(tok, text, args.question, **opts)
    sampling = sampling_of(args, defaults.sampling)
    result = generate(model, tok, [layout], policy=policy, config=cfg,
                      max_new_tokens=args.max_new_tokens, bound_sections=args.bound_sections,
                      sampling=sampling)[0]
    payload = result.to_dict()
    payload.update({"policy": policy.spec(), "model": str(args.model),
                    "sections": layout.num_sections, "block_size": cfg.block_size,
                    "delivery": layout.delivery or None, "sampling": sampling.to_dict()})
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
    st = payload.get("stats")
    if st:
        modes = ", ".join(f"{k} {v}" for k, v in st["mode_steps"].items() if v)
        con.print(f"decode steps by mode: {modes or '-'}; focus {st['focus_success']} of "
                  f"{st['focus_attempts']} resolved; "
                  f"{'ended' if st['terminated'] else 'cut at the token budget'}")
