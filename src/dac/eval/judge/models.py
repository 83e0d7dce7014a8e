"""The models a judging run talks to: any OpenAI-compatible endpoint, or a ``dac`` engine
in-process. Both answer a batch of chat conversations with :class:`Completion` objects, so
rubric writing and judging do not care where the model runs."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

Message = dict[str, str]

_THINK = re.compile(r"<think\s*>.*?</think\s*>", re.IGNORECASE | re.DOTALL)
_THINK_OPEN = re.compile(r"<think\s*>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</think\s*>", re.IGNORECASE)


@dataclass(frozen=True)
class Completion:
    """One reply: its text (reasoning removed where the server separated it) and why it
    stopped (``"stop"``, ``"length"``, ...; ``None`` when unknown)."""

    text: str
    finish_reason: str | None = "stop"

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


class ChatModel(Protocol):
    """A chat model: ``model`` names it, ``where`` says how it was reached (a URL, ``hf:DIR``)."""

    model: str
    where: str

    def complete_many(self, conversations: Sequence[list[Message]], *,
                      max_tokens: int) -> list[Completion]:
        """One completion per conversation, in order."""
        ...


def strip_thinking(text: str) -> str:
    """``text`` without its ``<think>...</think>`` blocks. Text before a lone ``</think>``
    (a template that opened the block in the prompt) is reasoning too; an unclosed
    ``<think>`` hides everything after it (the reply was cut while thinking)."""
    closes = list(_THINK_CLOSE.finditer(text))
    if closes and not _THINK_OPEN.search(text[:closes[-1].start()]):
        text = text[closes[-1].end():]
    text = _THINK.sub("", text)
    m = _THINK_OPEN.search(text)
    return (text[:m.start()] if m else text).strip()


def chat_endpoint(url: str) -> str:
    """The chat-completions URL for a base URL: ``http://h:8000`` and ``http://h:8000/v1``
    both give ``http://h:8000/v1/chat/completions``; a full endpoint URL is kept."""
    import httpx

    u = url.strip().rstrip("/")
    try:
        parsed = httpx.URL(u)
    except Exception:  # httpx.InvalidURL and friends
        raise ValueError(f"not a URL: {url!r}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"not an http(s) URL: {url!r}")
    if u.endswith("/chat/completions"):
        return u
    if parsed.path in ("", "/"):
        u += "/v1"
    return u + "/chat/completions"


class OpenAIChat:
    """A model behind an OpenAI-compatible ``/chat/completions`` endpoint (vLLM, ``dac serve``,
    a hosted API). Requests run ``concurrency`` at a time; 429 and 5xx are retried."""

    def __init__(self, url: str, model: str, *, api_key: str | None = None,
                 temperature: float = 0.0, timeout: float = 600.0, concurrency: int = 8,
                 extra_body: Mapping[str, Any] | None = None, retries: int = 3,
                 client: Any = None):
        import httpx

        if not model:
            raise ValueError("a model name is required for an OpenAI-compatible endpoint")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.model = model
        self.url = chat_endpoint(url)
        self.where = self.url.removesuffix("/chat/completions")
        self.temperature = temperature
        self.concurrency = concurrency
        self.extra_body = dict(extra_body or {})
        self.retries = retries
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = client or httpx.Client(timeout=timeout, headers=headers)

    def check(self) -> None:
        """Fail early, in one line, when the endpoint cannot be reached or refuses the key
        (``GET /models``; an endpoint without that route is accepted)."""
        import httpx

        try:
            r = self._client.get(self.where + "/models", timeout=10)
        except httpx.HTTPError as e:
            raise RuntimeError(f"cannot reach {self.where}: {_one_line(e)}") from None
        if r.status_code in (401, 403):
            raise RuntimeError(f"{self.where} refused the request (HTTP {r.status_code}): "
                               "check the API key")

    def complete(self, messages: list[Message], *, max_tokens: int) -> Completion:
        import httpx

        body = {"model": self.model, "messages": messages, "max_tokens": max_tokens,
                "temperature": self.temperature, **self.extra_body}
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                r = self._client.post(self.url, json=body)
            except httpx.HTTPError as e:
                if last:
                    raise RuntimeError(f"cannot reach {self.where}: {_one_line(e)}") from None
                time.sleep(2 ** attempt)
                continue
            if r.status_code in (429, 500, 502, 503, 504) and not last:
                time.sleep(2 ** attempt)
                continue
            if r.status_code >= 400:
                raise RuntimeError(f"{self.url} answered HTTP {r.status_code}: "
                                   f"{_one_line(r.text)[:300]}")
            return _parse_reply(r)
        raise AssertionError("unreachable")

    def complete_many(self, conversations: Sequence[list[Message]], *,
                      max_tokens: int) -> list[Completion]:
        if len(conversations) <= 1 or self.concurrency == 1:
            return [self.complete(c, max_tokens=max_tokens) for c in conversations]
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(lambda c: self.complete(c, max_tokens=max_tokens),
                                 conversations))

    def close(self) -> None:
        self._client.close()


def _parse_reply(r: Any) -> Completion:
    try:
        choice = r.json()["choices"][0]
        message = choice.get("message") or {}
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise RuntimeError(f"{r.request.url} did not answer with a chat completion: "
                           f"{_one_line(r.text)[:200]}") from None
    return Completion(message.get("content") or "", choice.get("finish_reason"))


def _one_line(x: Any) -> str:
    s = str(x).strip()
    return s.splitlines()[0] if s else type(x).__name__


class EngineChat:
    """A model served by one of ``dac``'s engines in-process, with full attention and the
    tokenizer's chat template (plain text without one); batches of ``batch_size``."""

    def __init__(self, engine: Any, *, model: str, where: str, thinking: bool = False,
                 temperature: float = 0.0, batch_size: int = 4):
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.engine = engine
        self.model = model
        self.where = where
        self.thinking = thinking
        self.sampling = {"temperature": temperature} if temperature > 0 else None
        self.batch_size = batch_size

    def layout(self, messages: list[Message]) -> Any:
        """The conversation's prompt as a layout (the last user turn is its one section)."""
        from ...protocol.base import fill_layout, render_chat, slot

        tok = self.engine.tokenizer
        last = max(i for i, m in enumerate(messages) if m["role"] == "user")
        shown = [dict(m) for m in messages]
        shown[last]["content"] = slot("c1") + slot("q")
        if getattr(tok, "chat_template", None):
            rendered, templated = render_chat(tok, shown, thinking=self.thinking), True
        else:
            rendered, templated = "\n\n".join(m["content"] for m in shown) + "\n", False
        return fill_layout(tok, rendered, [messages[last]["content"]], "", templated=templated,
                           protocol="vanilla", delivery="inline")

    def complete_many(self, conversations: Sequence[list[Message]], *,
                      max_tokens: int) -> list[Completion]:
        from ...runtime import Sampling

        sampling = Sampling(do_sample=True, temperature=self.sampling["temperature"]) \
            if self.sampling else Sampling()
        out: list[Completion] = []
        for i in range(0, len(conversations), self.batch_size):
            layouts = [self.layout(c) for c in conversations[i:i + self.batch_size]]
            results = self.engine.generate(layouts, policy="full", config=None,
                                           max_new_tokens=max_tokens, bound_sections=False,
                                           sampling=sampling)
            out += [Completion(r.text, "stop" if r.terminated else "length") for r in results]
        return out
