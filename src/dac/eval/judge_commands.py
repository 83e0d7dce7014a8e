"""``dac judge``: score a run's records with the paper's rubric judge (docs/judge.md).

Rubrics are written once per question by a chosen author model and kept in a JSONL file;
one judge model, reached over an OpenAI-compatible endpoint or loaded in-process by a
``dac`` engine, then gives one verdict per record under ``RUN_DIR/judge/``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

ENGINES = ("hf", "fast", "vllm")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "judge", help="score a run's records with per-question rubrics and an LLM judge",
        description="Write missing rubrics (once per question, by the rubric author) and give "
        "one verdict per record of RUN_DIR/cells/*.jsonl under RUN_DIR/judge/. Outputs with no "
        "<answer>...</answer> are wrong without a judge call; cut or unparseable verdicts are "
        "wrong and flagged. One judge per run: verdicts by another judge refuse the run "
        "unless --overwrite. See docs/judge.md.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by dac eval")
    j = p.add_argument_group("judge (exactly one of --judge-url, --judge-model-dir, --stub)")
    j.add_argument("--judge-url", help="OpenAI-compatible base URL, e.g. http://host:8000/v1")
    j.add_argument("--judge-model", help="the judge's model name (required with --judge-url; "
                   "with --judge-model-dir the name recorded, default the folder's name)")
    j.add_argument("--judge-model-dir", help="local model folder served by a dac engine")
    j.add_argument("--judge-engine", choices=ENGINES, default="hf",
                   help="engine for --judge-model-dir (default hf)")
    j.add_argument("--judge-api-key-env", metavar="VAR",
                   help="environment variable holding the judge endpoint's API key")
    j.add_argument("--judge-extra", metavar="JSON",
                   help="JSON object merged into each judge request, e.g. "
                   "'{\"chat_template_kwargs\": {\"enable_thinking\": true}}'")
    j.add_argument("--stub", action="store_true",
                   help="the test judge: reads each rubric's first line, no model")
    r = p.add_argument_group("rubrics (an author is needed only for questions without one)")
    r.add_argument("--rubrics", metavar="FILE",
                   help="rubric store, JSONL (default RUN_DIR/rubrics.jsonl); share it "
                   "between runs so each question's rubric is written once")
    r.add_argument("--rubric-url", help="OpenAI-compatible base URL of the rubric author")
    r.add_argument("--rubric-model", help="the rubric author's model name")
    r.add_argument("--rubric-model-dir", help="local model folder of the rubric author")
    r.add_argument("--rubric-engine", choices=ENGINES, default="hf")
    r.add_argument("--rubric-api-key-env", metavar="VAR")
    r.add_argument("--rubric-extra", metavar="JSON")
    r.add_argument("--stub-rubrics", action="store_true",
                   help="the test author: 'PASS if the answer contains: <first reference>'")
    r.add_argument("--examples", metavar="FILE",
                   help="JSONL of id, context, question, answers (or reference), optional "
                   "choices: what rubrics are written from (default: the question and "
                   "answers the records carry)")
    g = p.add_argument_group("generation")
    g.add_argument("--max-tokens", type=int, default=1024, help="judge reply cap (1024)")
    g.add_argument("--rubric-max-tokens", type=int, default=2048, help="rubric cap (2048)")
    g.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default)")
    g.add_argument("--thinking", action="store_true",
                   help="engine models: render the chat template with thinking on")
    g.add_argument("--concurrency", type=int, default=8, help="parallel HTTP requests (8)")
    g.add_argument("--batch-size", type=int, default=4, help="engine batch size (4)")
    g.add_argument("--device", default=None, help="engine device, e.g. cpu or cuda")
    g.add_argument("--timeout", type=float, default=600.0, help="seconds per HTTP request")
    p.add_argument("--overwrite", action="store_true",
                   help="replace verdicts given by another judge (or re-judge everything)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(handler=run_judge_command)


def _extra(text: str | None, flag: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as e:
        raise ValueError(f"{flag} is not JSON: {e}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{flag} must be a JSON object")
    return value


def _api_key(var: str | None, flag: str) -> str | None:
    if not var:
        return None
    key = os.environ.get(var)
    if not key:
        raise ValueError(f"{flag}: environment variable {var} is not set")
    return key


def chat_model(args: argparse.Namespace, role: str) -> Any | None:
    """The chat model of ``role`` (``judge`` or ``rubric``) from the arguments, or None."""
    url, model = getattr(args, f"{role}_url"), getattr(args, f"{role}_model")
    model_dir = getattr(args, f"{role}_model_dir")
    if url and model_dir:
        raise ValueError(f"give --{role}-url or --{role}-model-dir, not both")
    if url:
        from .judge import OpenAIChat

        if not model:
            raise ValueError(f"--{role}-url needs --{role}-model (the served model's name)")
        chat = OpenAIChat(url, model, temperature=args.temperature, timeout=args.timeout,
                          concurrency=args.concurrency,
                          api_key=_api_key(getattr(args, f"{role}_api_key_env"),
                                           f"--{role}-api-key-env"),
                          extra_body=_extra(getattr(args, f"{role}_extra"), f"--{role}-extra"))
        chat.check()
        return chat
    if model_dir:
        from .commands import make_engine
        from .judge import EngineChat

        engine_name = getattr(args, f"{role}_engine")
        path = Path(model_dir)
        engine = make_engine(engine_name, str(path), args.device, 64)
        return EngineChat(engine, model=model or path.resolve().name,
                          where=f"{engine_name}:{path.resolve()}", thinking=args.thinking,
                          temperature=args.temperature, batch_size=args.batch_size)
    if model:
        raise ValueError(f"--{role}-model needs --{role}-url or --{role}-model-dir")
    return None


def run_judge_command(args: argparse.Namespace) -> int:
    from .judge import ModelAuthor, ModelJudge, RubricStore, StubAuthor, StubJudge, judge_run
    from .judge import load_examples

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder not found: {run_dir}")
    if args.max_tokens < 1 or args.rubric_max_tokens < 1:
        raise ValueError("--max-tokens and --rubric-max-tokens must be positive")
    if args.stub and (args.judge_url or args.judge_model_dir):
        raise ValueError("--stub replaces the judge: drop --judge-url/--judge-model-dir")
    if args.stub_rubrics and (args.rubric_url or args.rubric_model_dir):
        raise ValueError("--stub-rubrics replaces the rubric author: drop "
                         "--rubric-url/--rubric-model-dir")
    examples = load_examples(args.examples) if args.examples else None
    store = RubricStore(args.rubrics or run_dir / "rubrics.jsonl")
    if args.stub:
        judge: Any = StubJudge()
    else:
        chat = chat_model(args, "judge")
        if chat is None:
            raise ValueError("no judge: give --judge-url and --judge-model, --judge-model-dir, "
                             "or --stub")
        judge = ModelJudge(chat)
    from .judge import check_judge

    check_judge(run_dir, judge, overwrite=args.overwrite)  # before loading an author model
    author_chat = None if args.stub_rubrics else chat_model(args, "rubric")
    author = StubAuthor() if args.stub_rubrics else (
        ModelAuthor(author_chat) if author_chat is not None else None)
    log = None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    summary = judge_run(run_dir, judge, store, author=author, examples=examples,
                        overwrite=args.overwrite, max_tokens=args.max_tokens,
                        rubric_max_tokens=args.rubric_max_tokens, log=log)
    print(summary.line())
    if summary.truncated:
        shown = ", ".join(summary.truncated[:10])
        more = f" and {len(summary.truncated) - 10} more" if len(summary.truncated) > 10 else ""
        print(f"truncated or unparseable verdicts (counted wrong): {shown}{more}")
    print(f"verdicts: {run_dir / 'judge'}; rubrics: {store.path}")
    return 0
