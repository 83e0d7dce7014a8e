"""``dac serve``: vLLM's OpenAI-compatible server with the DAC plugin and metadata middleware."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

#: vLLM options that make DAC inexact (see dac.engines.vllm.support); refused in extra args
REFUSED = ("--speculative-config", "--enable-prefix-caching", "--async-scheduling")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve", help="serve a model with vLLM + DAC (OpenAI-compatible API)",
        description="Start vLLM's OpenAI-compatible server with the DAC plugin. Every request "
        "is served under DAC with the model's own plan (dac_config.json) unless it opts out "
        "(\"dac\": false) or the server runs with --no-dac-by-default; options go in "
        "vllm_xargs (e.g. {\"dac_window\": 256}) or a top-level \"dac\" object. Each choice "
        "of a response carries a \"dac\" object (directive timeline, fraction of KV read, "
        "the answer without directives). Arguments after -- go to vLLM unchanged.")
    p.add_argument("--model", required=True, help="model directory, .gguf file, catalog "
                   "name (dac models list) or hub id")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--block-size", type=int, default=64,
                   help="vLLM KV block size = default DAC block size (CPU: multiple of 32)")
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--gpu-memory-utilization", type=float, default=None,
                   help="share of accelerator memory (vLLM on CPU sizes its KV cache with "
                   "VLLM_CPU_KVCACHE_SPACE, in GiB)")
    p.add_argument("--served-model-name", default=None)
    p.add_argument("--chat-template", default=None,
                   help="chat template file for /v1/chat/completions (default: the model's "
                   "own; a model without one gets the plain template of dac's prompts)")
    p.add_argument("--no-dac-by-default", dest="dac_by_default", action="store_false",
                   help="serve requests with full attention unless they ask for DAC")
    p.add_argument("vllm_args", nargs=argparse.REMAINDER,
                   help="-- followed by extra vLLM server arguments")
    p.set_defaults(handler=run_serve)


def vllm_argv(args: argparse.Namespace) -> list[str]:
    """The vLLM server command line for ``dac serve`` arguments (validated)."""
    from ..models import ModelLoadError, resolve_model

    try:
        model = resolve_model(args.model)  # a directory, .gguf, catalog name or hub id
    except ModelLoadError as e:
        raise FileNotFoundError(str(e)) from None
    if not (model / "config.json").is_file():
        raise FileNotFoundError(f"model directory not found or has no config.json: {args.model}")
    if args.block_size <= 0:
        raise ValueError("--block-size must be positive")
    if not 0 < args.port < 65536:
        raise ValueError("--port must be in 1..65535")
    extra = list(args.vllm_args or [])
    if extra and extra[0] == "--":
        extra = extra[1:]
    for flag in extra:
        if flag.split("=", 1)[0] in REFUSED:
            raise ValueError(f"{flag.split('=', 1)[0]} cannot be combined with DAC "
                             "(see docs/vllm.md)")
    argv = ["--model", str(model), "--host", args.host, "--port", str(args.port),
            "--block-size", str(args.block_size), "--dtype", args.dtype,
            "--no-enable-prefix-caching", "--no-async-scheduling",
            "--middleware", "dac.serve.middleware.DACMiddleware"]
    if args.max_model_len:
        argv += ["--max-model-len", str(args.max_model_len)]
    if args.gpu_memory_utilization is not None:
        argv += ["--gpu-memory-utilization", str(args.gpu_memory_utilization)]
    if args.served_model_name:
        argv += ["--served-model-name", args.served_model_name]
    template = chat_template(model, getattr(args, "chat_template", None))
    if template is not None and "--chat-template" not in extra:
        argv += ["--chat-template", template]
    if "--enforce-eager" not in extra and "--compilation-config" not in extra:
        argv += ["--enforce-eager"]  # no full CUDA graphs for DAC rows
    return argv + extra


#: the chat template of a model without one: the messages joined as dac's prompts render
#: them without a template (``dac.protocol.context.build_prompt``)
PLAIN_TEMPLATE = Path(__file__).with_name("plain_chat.jinja")


def chat_template(model: Path, given: str | None) -> str | None:
    """The ``--chat-template`` to pass to vLLM: the given file, else none when the model has
    its own, else :data:`PLAIN_TEMPLATE`."""
    if given is not None:
        if not Path(given).is_file():
            raise FileNotFoundError(f"chat template not found: {given}")
        return str(given)
    import json

    cfg = model / "tokenizer_config.json"
    try:
        own = json.loads(cfg.read_text()).get("chat_template") if cfg.is_file() else None
    except (OSError, ValueError):
        own = None
    if own or (model / "chat_template.jinja").is_file():
        return None
    return str(PLAIN_TEMPLATE)


def check_engine_config(vargs: argparse.Namespace) -> None:
    """Refuse a vLLM configuration under which DAC would be inexact (before starting it)."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    from ..engines.vllm.support import unsupported_reasons

    config = AsyncEngineArgs.from_cli_args(vargs).create_engine_config()
    reasons = unsupported_reasons(config)
    if reasons:
        raise ValueError("this vLLM configuration cannot run DAC exactly: " + "; ".join(reasons))


def run_serve(args: argparse.Namespace) -> int:
    argv = vllm_argv(args)
    os.environ["DAC_SERVE_TOKENIZER"] = argv[argv.index("--model") + 1]  # resolved
    os.environ["DAC_SERVE_BLOCK_SIZE"] = str(args.block_size)
    os.environ["DAC_SERVE_DEFAULT"] = "1" if getattr(args, "dac_by_default", True) else "0"
    if "--chat-template" in argv:
        os.environ["DAC_SERVE_CHAT_TEMPLATE"] = argv[argv.index("--chat-template") + 1]
    try:
        import uvloop
        from vllm.entrypoints.launchers.api_server.entry import run_server
        from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
        from vllm.utils.argparse_utils import FlexibleArgumentParser
    except ImportError as e:
        raise RuntimeError(f"dac serve needs vLLM (pip install 'dac[vllm]'): {e}") from None
    parser = make_arg_parser(FlexibleArgumentParser(prog="dac serve (vLLM)"))
    vargs = parser.parse_args(argv)
    validate_parsed_serve_args(vargs)
    check_engine_config(vargs)
    uvloop.run(run_server(vargs))
    return 0
