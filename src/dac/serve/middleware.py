"""ASGI middleware for vLLM's OpenAI server: validates DAC options, adds DAC metadata.

On ``POST /v1/completions`` and ``/v1/chat/completions``:

* DAC is on for every request by default, with the model's own plan (its
  ``dac_config.json``, :func:`dac.models.load_defaults`) for the options a request leaves out;
  a request opts out with ``"dac": false`` (or ``vllm_xargs: {"dac": 0}``), and a server
  started with ``--no-dac-by-default`` serves only the requests that ask for DAC.
* DAC options are read from ``vllm_xargs`` (flat keys, see :mod:`dac.engines.vllm.options`)
  or from a top-level ``"dac": {...}`` object (same keys, with or without the ``dac_`` prefix),
  validated, and written back to ``vllm_xargs``; a malformed option, or a request that asks
  for DAC on a prompt whose sections cannot be found (no ``[S1]``... markers and no
  ``dac_sections``, spans past the prompt), is answered with HTTP 400 and a one-line message
  before it reaches the engine. A request that did not ask (DAC by default) on such a prompt
  is served with full attention, and each choice says why (``"dac": {"applied": false,
  "reason": ...}``).
* a request that sets no ``temperature`` gets the model's own sampling (greedy for a model
  whose generation config does not sample), not vLLM's default of 1.0.
* section-bounded decoding (``dac_bound_sections``, default 1; policies that read directives):
  the directive tokens naming a section the prompt lacks are left out of the request's
  ``allowed_token_ids`` (:mod:`dac.protocol.constraint`). The section count comes from
  ``dac_sections``, else from the ``[S1]``, ``[S2]``... markers of the prompt text or messages
  (several prompts in one request: the largest count, which bans nothing any of them may use);
  with no markers found nothing is bounded and the parser's fallback applies;
* ``return_token_ids`` is turned on so that the server sees the prompt and generated token ids;
  each choice of the response (the non-streamed body, or the streamed chunk that carries its
  ``finish_reason``) gets a ``"dac"`` object: the directive timeline, the KV read and the
  answer without directives (``"answer"``, beside the raw text, as vLLM's reasoning parsers
  put reasoning beside content), from a replay of the worker's tracker over those ids. The ids
  are removed again unless the client asked for them.

Configuration comes from the environment set by ``dac serve``: ``DAC_SERVE_TOKENIZER`` (model or
tokenizer directory), ``DAC_SERVE_BLOCK_SIZE`` (the engine's KV block size),
``DAC_SERVE_DEFAULT`` (1: DAC by default) and ``DAC_SERVE_CHAT_TEMPLATE`` (the template file
chat requests are rendered with, when the server was given one).
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..engines.vllm.layout import marker_starts
from ..engines.vllm.options import (DACOptionError, DACOptions, bounded_allowed_ids,
                                    is_dac_request, parse_options)
from ..engines.vllm.tracker import eos_token_ids, replay
from ..protocol.constraint import banned_token_ids
from ..protocol.parser import strip_directives

PATHS = ("/v1/completions", "/v1/chat/completions")


def merge_options(data: dict[str, Any]) -> dict[str, Any]:
    """``vllm_xargs`` with a top-level ``dac`` object folded in (prefixing its keys)."""
    xargs = data.get("vllm_xargs") or {}
    if not isinstance(xargs, dict):
        raise DACOptionError("vllm_xargs must be an object")
    xargs = dict(xargs)
    top = data.get("dac")
    if top is None:
        return xargs
    if isinstance(top, bool):
        xargs["dac"] = int(top)
        return xargs
    if not isinstance(top, dict):
        raise DACOptionError("'dac' must be an object of DAC options or true/false")
    xargs.setdefault("dac", 1)
    for k, v in top.items():
        key = k if k == "dac" or k.startswith("dac_") else f"dac_{k}"
        xargs[key] = v
    return xargs


def with_defaults(xargs: dict[str, Any], plan: dict[str, Any], kernel_block_size: int | None
                  ) -> dict[str, Any]:
    """``xargs`` with the model's own plan (the fields its ``dac_config.json`` sets) for every
    planning option the request left out; the rest keep :mod:`dac.engines.vllm.options`'
    defaults (the block size: the engine's). The model's block size is taken only where the
    engine's KV blocks divide it."""
    out = dict(xargs)
    for field, value in plan.items():
        if field == "block_size" and kernel_block_size and value % kernel_block_size:
            continue
        out.setdefault(f"dac_{field}", int(value) if isinstance(value, bool) else value)
    return out


class _Tokenizer:
    _tok: Any = None
    _eos: set[int] = set()
    _vocab: int = 0  # the model's vocabulary (logits width): allowed_token_ids stay below it
    _defaults: Any = None

    _plan: dict[str, Any] = {}

    @classmethod
    def defaults(cls) -> Any:
        """The served model's :class:`dac.models.ModelDefaults` (read once)."""
        if cls._defaults is None:
            import dataclasses

            from ..models import load_defaults, read_dac_config

            path = os.environ.get("DAC_SERVE_TOKENIZER", "")
            cls._defaults = load_defaults(path)
            given = read_dac_config(path) if path else {}
            given = given.get("plan", given) if isinstance(given, dict) else {}
            cls._plan = {f.name: getattr(cls._defaults.plan, f.name)
                         for f in dataclasses.fields(cls._defaults.plan)
                         if isinstance(given, dict) and f.name in given}
        return cls._defaults

    @classmethod
    def plan(cls) -> dict[str, Any]:
        """The plan fields the served model's ``dac_config.json`` sets."""
        cls.defaults()
        return cls._plan

    @classmethod
    def vocab_size(cls) -> int:
        cls.get()
        return cls._vocab

    @classmethod
    def get(cls) -> tuple[Any, set[int]]:
        if cls._tok is None:
            from transformers import AutoTokenizer, GenerationConfig

            path = os.environ.get("DAC_SERVE_TOKENIZER")
            if not path:
                raise RuntimeError("DAC_SERVE_TOKENIZER is not set (start the server with dac serve)")
            cls._tok = AutoTokenizer.from_pretrained(path)
            gen = None
            try:
                gen = GenerationConfig.from_pretrained(path)
            except Exception:  # noqa: BLE001 - optional file
                gen = None
            from transformers import AutoConfig

            try:
                cfg = AutoConfig.from_pretrained(path)
            except Exception:  # noqa: BLE001
                cfg = None
            cls._eos = eos_token_ids(cls._tok, gen, cfg)
            text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
            cls._vocab = int(getattr(text, "vocab_size", None) or len(cls._tok))
        return cls._tok, cls._eos


def _prompt_texts(data: dict[str, Any], tokenizer: Any) -> list[str]:
    """The texts of a request's prompts (token-id prompts decoded; a chat's messages joined)."""
    if "messages" in data:
        parts = []
        for m in data.get("messages") or []:
            c = m.get("content") if isinstance(m, dict) else None
            if isinstance(c, str):
                parts.append(c)
            elif isinstance(c, list):
                parts += [p["text"] for p in c if isinstance(p, dict)
                          and isinstance(p.get("text"), str)]
        return ["\n\n".join(parts)]
    prompt = data.get("prompt")
    prompts = prompt if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int) \
        else [prompt]
    out = []
    for p in prompts:
        if isinstance(p, str):
            out.append(p)
        elif isinstance(p, list) and all(isinstance(t, int) for t in p):
            out.append(tokenizer.decode(p, skip_special_tokens=False))
    return out


def bound_sections(data: dict[str, Any], opts: DACOptions, tokenizer: Any,
                   vocab_size: int) -> list[int] | None:
    """The ``allowed_token_ids`` that bound a request's focus directives to its sections, or
    ``None`` to leave the request as it is (bound off, a policy that ignores directives, no
    section count, or a tokenizer without directive tokens)."""
    if not (opts.bound_sections and opts.policy.reads_directives):
        return None
    if opts.sections is not None:
        n = len(opts.sections)
    else:
        counts = [len(marker_starts(t)) for t in _prompt_texts(data, tokenizer)]
        n = max(counts, default=0)
        if n == 0:
            return None
    allowed = data.get("allowed_token_ids")
    if allowed is not None and not (isinstance(allowed, list) and allowed
                                    and all(type(t) is int for t in allowed)):
        return None  # the client's own malformed list: vLLM answers it
    return bounded_allowed_ids(banned_token_ids(tokenizer, n), vocab_size, allowed)


def prompt_ids(data: dict[str, Any], tokenizer: Any) -> list[list[int]] | None:
    """The token ids the server will see for each prompt of a request, as vLLM builds them
    (text prompts with the tokenizer's special tokens; chat messages through the server's
    chat template); ``None`` when they cannot be known here."""
    try:
        if "messages" in data:
            path = os.environ.get("DAC_SERVE_CHAT_TEMPLATE")
            template = open(path).read() if path else None
            text = tokenizer.apply_chat_template(data["messages"], tokenize=False,
                                                 add_generation_prompt=True,
                                                 chat_template=template)
            return [list(tokenizer(text, add_special_tokens=False)["input_ids"])]
        prompt = data.get("prompt")
        prompts = prompt if isinstance(prompt, list) and prompt \
            and not isinstance(prompt[0], int) else [prompt]
        out = []
        for p in prompts:
            if isinstance(p, str):
                out.append(list(tokenizer(p)["input_ids"]))
            elif isinstance(p, list) and p and all(type(t) is int for t in p):
                out.append(list(p))
            else:
                return None
        return out
    except Exception:  # noqa: BLE001 - vLLM answers what it cannot render itself
        return None


def check_layouts(data: dict[str, Any], opts: DACOptions, tokenizer: Any) -> None:
    """Raise :class:`DACOptionError` if a prompt's sections cannot be found (the request
    would otherwise be served with full attention)."""
    for ids in prompt_ids(data, tokenizer) or []:
        opts.layout(ids, tokenizer)


def metadata(opts: DACOptions, prompt_ids: list[int], token_ids: list[int]) -> dict[str, Any]:
    """The ``dac`` object of one choice: timeline, KV read and answer of a replayed request."""
    tok, eos = _Tokenizer.get()
    try:
        layout = opts.layout(list(prompt_ids), tok)
    except (DACOptionError, ValueError) as e:
        return {"applied": False, "error": str(e)}
    tr, text = replay(opts, layout, tok, list(token_ids), eos)
    read = sum(s.read for s in tr.steps)
    full = sum(s.length for s in tr.steps)
    timeline = []
    for e in tr.parser.events:
        a = e.applied
        timeline.append({"step": e.step, "kind": e.kind, "text": e.text,
                         "mode": a.mode.value if a else None,
                         "sections": a.sections() if a else [],
                         "window": a.window if a else None, "message": e.message})
    return {"schema": "dac.serve/1", "applied": True, "policy": opts.policy.spec(),
            "answer": strip_directives(text),
            "block_size": opts.config.block_size, "sections": layout.num_sections,
            "timeline": timeline,
            "kv": {"read": round(read, 3), "full": full,
                   "fraction": round(read / full, 6) if full else 1.0,
                   "decode_steps": len(tr.steps)}}


def _error(message: str, status: int = 400) -> bytes:
    return json.dumps({"error": {"message": message, "type": "BadRequestError",
                                 "param": "dac", "code": status}}).encode()


class DACMiddleware:
    """Pure ASGI (streaming-safe) middleware; vLLM adds it with ``--middleware``."""

    def __init__(self, app: Any):
        self.app = app
        self.block_size = int(os.environ.get("DAC_SERVE_BLOCK_SIZE", "0")) or None
        self.by_default = os.environ.get("DAC_SERVE_DEFAULT", "1").strip() not in ("0", "false")

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or scope.get("method") != "POST" \
                or scope.get("path") not in PATHS:
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        body = b"".join(chunks)
        try:
            data = json.loads(body)
            if not isinstance(data, dict):
                raise ValueError
        except ValueError:
            await self.app(scope, _replay_body(body, receive), send)  # vLLM answers the bad JSON
            return
        tok = _Tokenizer.get()[0]
        defaults = _Tokenizer.defaults()
        reason = None
        try:
            xargs = merge_options(data)
            asked = is_dac_request(xargs)
            implicit = not asked and "dac" not in xargs and self.by_default
            if asked or implicit:
                xargs = with_defaults(dict(xargs, dac=1), _Tokenizer.plan(), self.block_size)
            opts = parse_options(xargs, kernel_block_size=self.block_size)
            if opts is not None:
                try:
                    check_layouts(data, opts, tok)
                except DACOptionError as e:
                    if not implicit:
                        raise
                    reason, opts = str(e), None  # not asked for: full attention, said why
                    xargs = {k: v for k, v in xargs.items() if not k.startswith("dac")}
        except DACOptionError as e:
            await _send_json(send, 400, _error(str(e)))
            return
        if "temperature" not in data and not defaults.sampling.get("do_sample"):
            data["temperature"] = 0.0  # the model's own (greedy), not vLLM's default of 1.0
        if opts is None and reason is None:
            data.pop("dac", None)
            data["vllm_xargs"] = xargs
            new_body = json.dumps(data).encode()
            await self.app(dict(scope, headers=_length(scope, new_body)),
                           _replay_body(new_body, receive), send)
            return
        keep_ids = bool(data.get("return_token_ids"))
        data.pop("dac", None)
        data["vllm_xargs"] = xargs
        if opts is None:  # DAC by default, but this prompt has no sections
            new_body = json.dumps(data).encode()
            rewriter = _StreamRewriter if data.get("stream") else _BodyRewriter
            await self.app(dict(scope, headers=_length(scope, new_body)),
                           _replay_body(new_body, receive),
                           rewriter(send, None, True, reason))
            return
        allowed = bound_sections(data, opts, tok, _Tokenizer.vocab_size())
        if allowed is not None:
            data["allowed_token_ids"] = allowed
        data["return_token_ids"] = True
        new_body = json.dumps(data).encode()
        scope = dict(scope, headers=_length(scope, new_body))
        if data.get("stream"):
            await self.app(scope, _replay_body(new_body, receive), _StreamRewriter(send, opts, keep_ids))
        else:
            await self.app(scope, _replay_body(new_body, receive), _BodyRewriter(send, opts, keep_ids))


def _length(scope: dict, body: bytes) -> list[tuple[bytes, bytes]]:
    """The request headers with ``content-length`` set for ``body``."""
    headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"]
    return headers + [(b"content-length", str(len(body)).encode())]


def _replay_body(body: bytes, receive: Any) -> Any:
    """A ``receive`` that yields ``body`` once, then waits on the client (disconnect checks)."""
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _send_json(send: Any, status: int, payload: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


def _annotate(choice: dict, opts: DACOptions | None, prompt_ids: list[int] | None,
              token_ids: list[int], keep_ids: bool, reason: str | None = None) -> None:
    if opts is None:
        choice["dac"] = {"schema": "dac.serve/1", "applied": False, "reason": reason}
    elif prompt_ids is None:
        choice["dac"] = {"applied": False, "error": "the server returned no prompt token ids"}
    else:
        choice["dac"] = metadata(opts, prompt_ids, token_ids)
    if not keep_ids:
        choice.pop("token_ids", None)
        choice.pop("prompt_token_ids", None)


class _BodyRewriter:
    """Buffers a JSON response and adds ``dac`` to each choice."""

    def __init__(self, send: Any, opts: DACOptions | None, keep_ids: bool,
                 reason: str | None = None):
        self.send, self.opts, self.keep_ids, self.reason = send, opts, keep_ids, reason
        self.start: dict | None = None
        self.parts: list[bytes] = []

    async def __call__(self, msg: dict) -> None:
        if msg["type"] == "http.response.start":
            self.start = msg
            return
        if msg["type"] != "http.response.body":
            await self.send(msg)
            return
        self.parts.append(msg.get("body", b""))
        if msg.get("more_body"):
            return
        body = b"".join(self.parts)
        assert self.start is not None
        if self.start["status"] == 200:
            try:
                data = json.loads(body)
                if not isinstance(data, dict):
                    raise ValueError("not an object")
                top_prompt = data.get("prompt_token_ids")
                for ch in data.get("choices", []):
                    _annotate(ch, self.opts, ch.get("prompt_token_ids") or top_prompt,
                              ch.get("token_ids") or [], self.keep_ids, self.reason)
                if not self.keep_ids:
                    data.pop("prompt_token_ids", None)
                body = json.dumps(data).encode()
            except ValueError:
                pass
        headers = [(k, v) for k, v in self.start.get("headers", [])
                   if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await self.send(dict(self.start, headers=headers))
        await self.send({"type": "http.response.body", "body": body})


class _StreamRewriter:
    """Rewrites server-sent events: collects ids per choice, annotates the finishing chunk."""

    def __init__(self, send: Any, opts: DACOptions | None, keep_ids: bool,
                 reason: str | None = None):
        self.send, self.opts, self.keep_ids, self.reason = send, opts, keep_ids, reason
        self.buf = b""
        self.prompt: dict[int, list[int]] = {}
        self.top_prompt: list[int] | None = None
        self.ids: dict[int, list[int]] = {}
        self.ok = True

    async def __call__(self, msg: dict) -> None:
        if msg["type"] == "http.response.start":
            self.ok = msg["status"] == 200
            await self.send(msg)
            return
        if msg["type"] != "http.response.body" or not self.ok:
            await self.send(msg)
            return
        self.buf += msg.get("body", b"")
        more = msg.get("more_body", False)
        out = []
        while b"\n\n" in self.buf:
            event, self.buf = self.buf.split(b"\n\n", 1)
            out.append(self._rewrite(event) + b"\n\n")
        if not more and self.buf:
            out.append(self._rewrite(self.buf))
            self.buf = b""
        await self.send({"type": "http.response.body", "body": b"".join(out), "more_body": more})

    def _rewrite(self, event: bytes) -> bytes:
        if not event.startswith(b"data: ") or event.strip() == b"data: [DONE]":
            return event
        try:
            data = json.loads(event[len(b"data: "):])
        except ValueError:
            return event
        if data.get("prompt_token_ids") is not None:
            self.top_prompt = data["prompt_token_ids"]
        for ch in data.get("choices", []):
            i = ch.get("index", 0)
            if ch.get("prompt_token_ids") is not None:
                self.prompt[i] = ch["prompt_token_ids"]
            self.ids.setdefault(i, []).extend(ch.get("token_ids") or [])
            if ch.get("finish_reason") is not None:
                _annotate(ch, self.opts, self.prompt.get(i, self.top_prompt), self.ids[i],
                          self.keep_ids, self.reason)
            elif not self.keep_ids:
                ch.pop("token_ids", None)
                ch.pop("prompt_token_ids", None)
        if not self.keep_ids:
            data.pop("prompt_token_ids", None)
        return b"data: " + json.dumps(data).encode()
