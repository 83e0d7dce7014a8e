"""ASGI middleware for vLLM's OpenAI server: validates DAC options, adds DAC metadata.

On ``POST /v1/completions`` and ``/v1/chat/completions``:

* DAC options are read from ``vllm_xargs`` (flat keys, see :mod:`dac.engines.vllm.options`)
  or from a top-level ``"dac": {...}`` object (same keys, with or without the ``dac_`` prefix),
  validated, and written back to ``vllm_xargs``; a malformed option is answered with HTTP 400
  and a one-line message before the request reaches the engine.
* section-bounded decoding (``dac_bound_sections``, default 1; policies that read directives):
  the directive tokens naming a section the prompt lacks are left out of the request's
  ``allowed_token_ids`` (:mod:`dac.protocol.constraint`). The section count comes from
  ``dac_sections``, else from the ``[S1]``, ``[S2]``... markers of the prompt text or messages
  (several prompts in one request: the largest count, which bans nothing any of them may use);
  with no markers found nothing is bounded and the parser's fallback applies;
* ``return_token_ids`` is turned on so that the server sees the prompt and generated token ids;
  each choice of the response (the non-streamed body, or the streamed chunk that carries its
  ``finish_reason``) gets a ``"dac"`` object: the directive timeline and the KV read, from a
  replay of the worker's tracker over those ids. The ids are removed again unless the client
  asked for them.

Configuration comes from the environment set by ``dac serve``: ``DAC_SERVE_TOKENIZER`` (model or
tokenizer directory) and ``DAC_SERVE_BLOCK_SIZE`` (the engine's KV block size).
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..engines.vllm.layout import marker_starts
from ..engines.vllm.options import DACOptionError, DACOptions, bounded_allowed_ids, parse_options
from ..engines.vllm.tracker import eos_token_ids, replay
from ..protocol.constraint import banned_token_ids

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


class _Tokenizer:
    _tok: Any = None
    _eos: set[int] = set()
    _vocab: int = 0  # the model's vocabulary (logits width): allowed_token_ids stay below it

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


def metadata(opts: DACOptions, prompt_ids: list[int], token_ids: list[int]) -> dict[str, Any]:
    """The ``dac`` object of one choice: timeline and KV read of a replayed request."""
    tok, eos = _Tokenizer.get()
    try:
        layout = opts.layout(list(prompt_ids), tok)
    except (DACOptionError, ValueError) as e:
        return {"error": str(e)}
    tr, _ = replay(opts, layout, tok, list(token_ids), eos)
    read = sum(s.read for s in tr.steps)
    full = sum(s.length for s in tr.steps)
    timeline = []
    for e in tr.parser.events:
        a = e.applied
        timeline.append({"step": e.step, "kind": e.kind, "text": e.text,
                         "mode": a.mode.value if a else None,
                         "sections": a.sections() if a else [],
                         "window": a.window if a else None, "message": e.message})
    return {"schema": "dac.serve/1", "policy": opts.policy.name,
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
        try:
            xargs = merge_options(data)
            opts = parse_options(xargs, kernel_block_size=self.block_size)
        except DACOptionError as e:
            await _send_json(send, 400, _error(str(e)))
            return
        if opts is None:
            await self.app(scope, _replay_body(body, receive), send)
            return
        keep_ids = bool(data.get("return_token_ids"))
        data.pop("dac", None)
        data["vllm_xargs"] = xargs
        allowed = bound_sections(data, opts, _Tokenizer.get()[0], _Tokenizer.vocab_size())
        if allowed is not None:
            data["allowed_token_ids"] = allowed
        data["return_token_ids"] = True
        new_body = json.dumps(data).encode()
        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(new_body)).encode()))
        scope = dict(scope, headers=headers)
        if data.get("stream"):
            await self.app(scope, _replay_body(new_body, receive), _StreamRewriter(send, opts, keep_ids))
        else:
            await self.app(scope, _replay_body(new_body, receive), _BodyRewriter(send, opts, keep_ids))


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


def _annotate(choice: dict, opts: DACOptions, prompt_ids: list[int] | None,
              token_ids: list[int], keep_ids: bool) -> None:
    if prompt_ids is None:
        choice["dac"] = {"error": "the server returned no prompt token ids"}
    else:
        choice["dac"] = metadata(opts, prompt_ids, token_ids)
    if not keep_ids:
        choice.pop("token_ids", None)
        choice.pop("prompt_token_ids", None)


class _BodyRewriter:
    """Buffers a JSON response and adds ``dac`` to each choice."""

    def __init__(self, send: Any, opts: DACOptions, keep_ids: bool):
        self.send, self.opts, self.keep_ids = send, opts, keep_ids
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
                              ch.get("token_ids") or [], self.keep_ids)
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

    def __init__(self, send: Any, opts: DACOptions, keep_ids: bool):
        self.send, self.opts, self.keep_ids = send, opts, keep_ids
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
                          self.keep_ids)
            elif not self.keep_ids:
                ch.pop("token_ids", None)
                ch.pop("prompt_token_ids", None)
        if not self.keep_ids:
            data.pop("prompt_token_ids", None)
        return b"data: " + json.dumps(data).encode()
