"""``dac demo``: the embedded demonstration, an application of the engine, the suite's records
and the report's timeline picture."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from .commands import print_result
from .planning.blocks import PlanConfig

DEFAULT_MODEL = Path(__file__).parent / "assets" / "dac-tiny"
#: the default answer budget under a protocol whose answers carry tags (da, vanilla)
TAGGED_NEW_TOKENS = 160


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="the embedded demonstration (default model, one long document)",
                       description="Generate a long document with a hidden fact, ask about it, and "
                       "show the model's directives, the answer, the KV fraction read under DAC "
                       "versus full attention, and a picture of what each decode step read.")
    p.add_argument("--model", default=None,
                   help="model directory, .gguf file or catalog name (default: the "
                   "bundled demonstration model)")
    p.add_argument("--task", default="niah_single_prose",
                   help="task generator (dac eval --list-tasks lists them)")
    p.add_argument("--length", type=int, default=4096, help="prompt length in tokens")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="answer budget (default: the task's; %d under the da and vanilla "
                   "protocols, whose answers carry tags)" % TAGGED_NEW_TOKENS)
    p.add_argument("--out", default="runs/demo", help="folder for the picture and JSON")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from .tasks import TASKS

    if args.task not in TASKS:
        raise ValueError(f"unknown task {args.task!r}; choose from {', '.join(TASKS)}")
    if args.length < 64:
        raise ValueError("--length must be at least 64")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise ValueError("--max-new-tokens must be at least 1")
    from rich.console import Console

    status = Console(stderr=True).status("loading the model")
    with status:
        return _run(args, status)


def _run(args: argparse.Namespace, status: Any) -> int:
    """The demo, announcing each stage (a spinner on the terminal's stderr)."""
    stage = status.update
    from .engines.hf import generate
    from .eval.records import make_record
    from .eval.runner import layout_for
    from .eval.report import plot_timeline
    from .models import load, load_defaults, resolve_model, tiny_model, tiny_tokenizer
    from .tasks import TASKS, make_sample

    notice = ""
    model_dir = resolve_model(args.model) if args.model else DEFAULT_MODEL
    if args.model or (DEFAULT_MODEL / "config.json").is_file():
        model, tok = load(model_dir)
        defaults = load_defaults(model_dir)
        cfg, prompt = defaults.plan, defaults.prompt
        protocol = defaults.protocol  # the one its dac_config.json names (da if none)
        name = model_dir.name
    else:
        notice = ("no trained demonstration model is bundled: using a random-weight model "
                  "(directives and answers will be noise; the pipeline is real)")
        tok = tiny_tokenizer()
        model = tiny_model("llama", vocab_size=len(tok), max_positions=args.length * 2 + 256)
        cfg = PlanConfig()
        prompt = {}
        protocol = "brackets"
        name = "random-tiny-llama"
    # a random model says nothing worth reading: make it write a full-length answer anyway
    extra = {"min_new_tokens": TASKS[args.task].max_new_tokens} if notice else {}
    spec = TASKS[args.task]
    max_new_tokens = args.max_new_tokens or (
        spec.max_new_tokens if protocol == "brackets" else TAGGED_NEW_TOKENS)
    stage(f"writing a {args.length}-token document ({args.task})")
    sample = make_sample(args.task, tok, args.length, args.seed)
    layout = layout_for(sample, tok, protocol, prompt if protocol == "brackets" else None)
    evidence = sample.evidence_spans(layout)
    records = {}
    for pol in ("dac", "full"):
        stage("answering under DAC" if pol == "dac" else "answering under full attention")
        t0 = time.perf_counter()
        res = generate(model, tok, [layout], policy=pol, config=cfg,
                       max_new_tokens=max_new_tokens, evidence=[evidence], **extra)[0]
        records[pol] = make_record(sample, layout, evidence, res, pol, cfg.block_size,
                                   time.perf_counter() - t0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    png = out / "timeline.png"
    stage("drawing the timeline")
    plot_timeline(list(records.values()), png)
    payload = {"model": name, "protocol": protocol, "notice": notice,
               "question": sample.question, "expected": sample.answers,
               "ideal": _ideal(sample, protocol),
               "evidence_sections": sorted({s for s, _, _ in sample.evidence}),
               "runs": records, "timeline_png": str(png)}
    (out / "demo.json").write_text(json.dumps(payload, indent=2))
    status.stop()
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
    under = f" under the {protocol} protocol" if protocol != "brackets" else ""
    con.print(f"[bold]{name}[/bold] on {args.task}{under}: {layout.prompt_len} prompt tokens in "
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


def _ideal(sample: Any, protocol: str) -> str | None:
    """The response the model was taught for ``sample`` under ``protocol`` (None if none)."""
    if protocol == "brackets":
        from .train.targets import led_target

        return led_target(sample)
    if protocol == "da":
        from .train.da_traces import da_response

        try:
            return da_response(sample)
        except ValueError:  # not a focus task: no DA trace is taught for it
            return None
    return None
