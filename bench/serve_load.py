"""Bounded fault and load test of ``dac serve`` on loopback: a summary of what happened.

    .venv/bin/python bench/serve_load.py --tiny --out bench/results/serve_load.json
    .venv/bin/python bench/serve_load.py --url http://127.0.0.1:8000 --model DIR [--pid PID]

One concurrent batch mixes well-formed requests (DAC with forced directives, DAC free-running,
plain; streamed and not) with faults: clients that close the connection after the first chunks
of a long stream, prompts longer than the server's ``max_model_len``, bodies that are not valid
JSON (or not a valid request), and malformed DAC options. Every well-formed request must return
exactly what the same request returned alone on the quiet server (token ids, text, finish
reason, ``dac`` metadata); every fault must get a 4xx (or, for a disconnect, be aborted by the
engine); the server must stay healthy, drain to zero running requests, and its process-tree RSS
must return near its warmed-up baseline. Everything is bounded: a fixed number of requests, a
per-request timeout and an overall timeout; only 127.0.0.1 is contacted.

The summary (printed, and written as JSON with ``--out``): requests sent / completed / failed
by reason, wrong outputs (must be 0), engine aborts, memory. Exit code 0 only if all checks hold.

A hang-up can only be judged if the client hung up in time. On small shared machines the client
process itself is sometimes frozen for seconds (measured here: a thread that only sleeps 10 ms
at a time saw 4-6 s gaps while the server ran), and the engine meanwhile runs the abandoned
streams to their end. So a watcher thread records the client's longest stall during the batch
(``client_stall_s``); past ``STALL_LIMIT_S`` the hang-up check is ``None`` (not judged) instead of
failed, and ``--attempts`` runs the batch again. The tests judge hang-ups separately, one at a
time on the quiet server (``quiet_hang_up``). A stall also breaks connections from the client's
side: frozen past the server's keep-alive timeout (uvicorn's 5 s), a pooled connection is closed
under a request about to reuse it (a ``ReadError``, seen here with a 5.9 s stall). So when every
failure of a batch is such a transport error and the client stalled, the completion check is
``None`` as well; HTTP errors and wrong outputs are always judged.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

#: RSS growth tolerated after the batch, relative to the warmed-up baseline (see
#: docs/reliability.md "Server faults and load"): the larger of the two bounds.
RSS_TOL_FRAC, RSS_TOL_BYTES = 0.15, 300 * 2**20
DAC_OPTS = {"sink_tokens": 32, "window": 32, "local_window": 64}
#: a client stall longer than this (s) leaves the hang-up check unjudged (module doc)
STALL_LIMIT_S = 1.0
CHAT_TEMPLATE = "{% for m in messages %}{{ m['content'] }}\n\n{% endfor %}Answer:"


@dataclass(eq=False)
class Spec:
    """One request of the batch and what it must produce."""

    kind: str  # ok | disconnect | boundary | oversized | bad_json | bad_option
    body: Any  # dict (sent as JSON) or raw bytes
    stream: bool = False
    ref_key: str | None = None  # well-formed: key of the quiet-server reference
    expect: str | None = None  # bad_option: substring of the error message
    focus: int | None = None  # forced [[focus S<k>]]: the timeline must start with it
    outcome: str = ""
    detail: str = ""
    result: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- requests

def _layout(tok: Any, n: int, repeat: int = 1) -> Any:
    from dac.protocol.context import build_prompt

    secs = [(f"The river {i} runs past the mountain and the city {i} has a harbour. " * repeat)
            .strip() for i in range(n)]
    return build_prompt(tok, secs, "What is the value?")


def _body(model: str, prompt: Any, max_tokens: int, *, force: list[int] | None = None,
          dac: Any = None, stream: bool = False, **kw: Any) -> dict:
    b = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
         "stream": stream, "return_token_ids": True, **kw}
    if force:
        b["vllm_xargs"] = {"force_token_ids": force}
    if dac is not None:
        b["dac"] = dac
    return b


def well_formed(tok: Any, model: str) -> dict[str, tuple[dict, int | None]]:
    """Distinct well-formed requests (non-streamed form) and their forced focus section."""
    enc = lambda t: tok(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    lays = [_layout(tok, n) for n in (4, 6, 8)]
    out: dict[str, tuple[dict, int | None]] = {}
    for i, lay in enumerate(lays):
        sec = 2 + i
        text = f"[[focus S{sec}]] the city"
        # forced directive, then free tokens under the focus
        out[f"dac-focus-{i}"] = (_body(model, lay.text, 16, force=enc(text), dac=DAC_OPTS), sec)
        out[f"dac-free-{i}"] = (_body(model, lay.text, 12, dac=DAC_OPTS), None)
        out[f"plain-{i}"] = (_body(model, lay.text, 12), None)
    out["dac-local-global"] = (_body(model, lays[2].text, 20,
                                     force=enc("[[local 64]] the river [[global]] the"),
                                     dac=DAC_OPTS), None)
    return out


def faults(tok: Any, model: str, max_len: int, n_disconnect: int) -> list[Spec]:
    """The fault requests of the batch (their expected outcome is in ``kind``/``expect``)."""
    lay = _layout(tok, 4)
    long_ids = [int(t) % 200 + 10 for t in range(max_len + 64)]
    long_text = " ".join(["the river runs past the city"] * (max_len // 3 + 50))
    specs = [Spec("disconnect", _body(model, lay.text, max_len - lay.prompt_len - 8,
                                      dac=DAC_OPTS if i % 2 == 0 else None, stream=True,
                                      ignore_eos=True), stream=True)
             for i in range(n_disconnect)]
    specs += [
        Spec("oversized", _body(model, long_ids, 8)),
        Spec("oversized", _body(model, long_ids, 8, dac=DAC_OPTS)),
        Spec("oversized", _body(model, long_text, 8, dac=DAC_OPTS, stream=True), stream=True),
    ]
    # prompt 4 tokens short of the limit, max_tokens past it: vLLM caps the output (200, 4 tokens)
    specs.append(Spec("boundary", _body(model, long_ids[: max_len - 4], 100)))
    specs += [Spec("bad_json", raw) for raw in (
        b'{"model": "m", "prompt": "hello", "max_tok',  # truncated
        b"this is not json",
        b"[1, 2, 3]",
        b"\xff\xfe\x00garbage",
        json.dumps({"model": model, "prompt": "hi", "max_tokens": "many"}).encode(),
        json.dumps({"model": model, "max_tokens": 4}).encode(),  # no prompt
    )]
    specs += [Spec("bad_option", _body(model, lay.text, 4, dac=d), expect=e) for d, e in (
        ({"window": "abc"}, "dac_window must be an integer"),
        ({"windw": 3}, "unknown DAC option"),
        ({"policy": "nope"}, "unknown policy"),
        ({"sections": [5, 3]}, "bad span"),
        ("yes", "'dac' must be an object"),
    )]
    b = _body(model, lay.text, 4)
    b["vllm_xargs"] = [1, 2]
    specs.append(Spec("bad_option", b, expect="vllm_xargs must be an object"))
    return specs


# ----------------------------------------------------------------------------- running

def parse_sse(text: str) -> list[dict]:
    events = [e[len("data: "):] for e in text.split("\n\n") if e.startswith("data: ")]
    if not events or events[-1] != "[DONE]":
        raise ValueError("stream not terminated by [DONE]")
    return [json.loads(e) for e in events[:-1]]


def outcome_of(chunks: list[dict]) -> dict:
    """Token ids, text, finish reason and ``dac`` object of a (merged) single-choice result."""
    ids: list[int] = []
    text, finish, meta = "", None, None
    for c in chunks:
        for ch in c.get("choices", []):
            ids += ch.get("token_ids") or []
            text += ch.get("text") or ""
            finish = ch.get("finish_reason") or finish
            meta = ch.get("dac", meta)
    return {"token_ids": ids, "text": text, "finish_reason": finish, "dac": meta}


async def send(http: httpx.AsyncClient, base: str, spec: Spec) -> dict:
    """Send one well-formed request; its outcome (raises on a non-200 or a broken stream)."""
    body = dict(spec.body, stream=spec.stream)
    r = await http.post(base + "/v1/completions", json=body)
    if r.status_code != 200:
        raise RuntimeError(f"http {r.status_code}")
    return outcome_of(parse_sse(r.text) if spec.stream else [r.json()])


async def hang_up(base: str, body: dict, timeout: float, chunks_before_close: int = 2) -> str:
    """Open a stream on its own connection, read its first chunks, close the connection (the
    engine must abort the request); 'completed' or what went wrong."""
    async with httpx.AsyncClient(timeout=timeout) as own:
        async with own.stream("POST", base + "/v1/completions", json=body) as r:
            if r.status_code != 200:
                return f"http {r.status_code}"
            n = 0
            async for line in r.aiter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    n += 1
                    if n >= chunks_before_close:
                        break
            if n < chunks_before_close:
                return "stream ended before the disconnect"
    return "completed"


async def quiet_hang_up(base: str, model_dir: str | Path, *, dac: Any = None, attempts: int = 6,
                        timeout: float = 60.0) -> dict:
    """Hang-ups on the otherwise idle server, one at a time, until one is seen aborted: the
    tokens the engine generated for each against its ``max_tokens``. Few tokens pass at once;
    an attempt that ran to its end fails only if the client ran throughout (else it is not
    judged). ``aborted``: True once an attempt was aborted, False if none was and one was
    judged, None if every attempt ran long while the client stalled. Retrying bounds the
    chance that a late abort (a machine busy elsewhere) fails a working server, while a
    server that never aborts fails every attempt."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    tries: list[dict] = []
    async with httpx.AsyncClient(timeout=timeout) as http:
        info = (await http.get(base + "/v1/models")).json()["data"][0]
        lay = _layout(tok, 4)
        body = _body(info["id"], lay.text, int(info.get("max_model_len") or 2048)
                     - lay.prompt_len - 8, dac=dac, stream=True, ignore_eos=True)
        for _ in range(max(1, attempts)):
            await drain(http, base, 30)
            before = await engine_counts(http, base)
            with StallWatch() as watch:
                outcome = await hang_up(base, body, timeout)
            after, ran_on = await drain(http, base, 30)
            generated = int(after["generated"] - before["generated"])
            tries.append({
                "outcome": outcome, "generated": generated, "client_stall_s": round(watch.longest, 3),
                "ran_on_s": round(ran_on, 3),  # from the hang-up until the engine was idle
                "aborted": (True if generated <= 0.25 * body["max_tokens"] else
                            False if watch.longest <= STALL_LIMIT_S else None)})
            if outcome != "completed" or tries[-1]["aborted"]:
                break
    judged = [t["aborted"] for t in tries if t["aborted"] is not None]
    return {"outcome": tries[-1]["outcome"], "max_tokens": body["max_tokens"],
            "aborted": any(judged) if judged else None, "attempts": tries}


async def run_one(http: httpx.AsyncClient, base: str, spec: Spec, refs: dict, timeout: float,
                  chunks_before_close: int = 2) -> None:
    """Run ``spec`` and set its ``outcome``: 'completed' or a failure reason."""
    try:
        if spec.kind == "ok":
            got = await send(http, base, spec)
            spec.result = got
            ref = refs[spec.ref_key]
            if got != ref:
                diff = [k for k in ref if got.get(k) != ref[k]]
                spec.outcome, spec.detail = "wrong output", f"{spec.ref_key}: differs in {diff}"
            elif spec.focus is not None and (
                    not got["dac"] or not got["dac"].get("timeline")
                    or got["dac"]["timeline"][0]["sections"] != [spec.focus]):
                spec.outcome, spec.detail = "wrong output", f"{spec.ref_key}: focus not applied"
            else:
                spec.outcome = "completed"
        elif spec.kind == "disconnect":
            spec.outcome = await hang_up(base, spec.body, timeout, chunks_before_close)
        elif spec.kind == "boundary":
            got = await send(http, base, spec)
            spec.result = got
            room = refs["max_len"] - len(spec.body["prompt"])
            spec.outcome = "completed" if len(got["token_ids"]) == room and \
                got["finish_reason"] == "length" else "boundary: output not capped at the limit"
        else:
            if isinstance(spec.body, bytes):
                r = await http.post(base + "/v1/completions", content=spec.body,
                                    headers={"content-type": "application/json"})
            else:
                r = await http.post(base + "/v1/completions", json=spec.body)
            spec.result = {"status": r.status_code, "body": r.text[:300]}
            if not 400 <= r.status_code < 500:
                spec.outcome = f"{spec.kind}: http {r.status_code} (expected 4xx)"
            elif spec.expect and spec.expect not in r.text:
                spec.outcome = f"{spec.kind}: message lacks {spec.expect!r}"
            else:
                try:
                    r.json()["error"]
                    spec.outcome = "completed"
                except (ValueError, KeyError, TypeError):
                    spec.outcome = f"{spec.kind}: 4xx without a JSON error"
    except httpx.TimeoutException:
        spec.outcome = "timeout"
    except httpx.HTTPError as e:
        spec.outcome = f"transport error ({type(e).__name__})"
    except (ValueError, RuntimeError, KeyError) as e:
        spec.outcome = f"bad response ({e})"


class StallWatch:
    """A thread that sleeps 10 ms at a time and records the longest gap it saw: how long this
    process went without running (a frozen client cannot hang up in time)."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(0.01):
            now = time.monotonic()
            self.longest = max(self.longest, now - last)
            last = now

    def __enter__(self) -> StallWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


# ----------------------------------------------------------------------------- server state

def tree_rss(pid: int) -> int:
    """RSS in bytes of a process and its descendants (the API server and the engine core)."""
    import psutil

    p = psutil.Process(pid)
    total = 0
    for q in [p, *p.children(recursive=True)]:
        try:
            total += q.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of a Prometheus metric's samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(\{{.*\}})?\s+(\S+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            total += float(m.group(2))
    return total


async def engine_counts(http: httpx.AsyncClient, base: str) -> dict[str, float]:
    text = (await http.get(base + "/metrics")).text
    return {"running": metric(text, "vllm:num_requests_running"),
            "waiting": metric(text, "vllm:num_requests_waiting"),
            "generated": metric(text, "vllm:generation_tokens_total")}


async def drain(http: httpx.AsyncClient, base: str, limit: float) -> tuple[dict, float]:
    """Wait until the engine runs and queues nothing (at most ``limit`` seconds)."""
    t0 = time.monotonic()
    while True:
        c = await engine_counts(http, base)
        if c["running"] == 0 and c["waiting"] == 0 or time.monotonic() - t0 > limit:
            return c, time.monotonic() - t0
        await asyncio.sleep(0.25)


# ----------------------------------------------------------------------------- the test

async def run_load(base: str, model_dir: str | Path, *, pid: int | None = None,
                   model_name: str | None = None, n_ok: int = 24, n_disconnect: int = 8,
                   request_timeout: float = 60.0, overall_timeout: float = 180.0) -> dict:
    """Run the fault/load batch against a server at ``base``; the summary (see module doc)."""
    from transformers import AutoTokenizer

    if urlparse(base).hostname != "127.0.0.1":
        raise ValueError("the load test only contacts 127.0.0.1")
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    t_start = time.monotonic()
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(timeout=request_timeout, limits=limits) as http:
        models = (await http.get(base + "/v1/models")).json()["data"]
        model = model_name or models[0]["id"]
        max_len = int(models[0].get("max_model_len") or 2048)
        distinct = well_formed(tok, model)

        # references on the quiet server, one request at a time (also the warm-up)
        refs: dict[str, Any] = {"max_len": max_len}
        for key, (body, _) in distinct.items():
            refs[key] = await send(http, base, Spec("ok", body))
        # a concurrent warm-up burst so that batch-sized buffers exist before the baseline
        warm = [Spec("ok", b, stream=bool(i % 2), ref_key=k)
                for i, (k, (b, _)) in enumerate(list(distinct.items()) * 2)]
        await asyncio.gather(*(run_one(http, base, s, refs, request_timeout) for s in warm))
        warm_bad = [s.outcome for s in warm if s.outcome != "completed"]
        await drain(http, base, 30)
        await asyncio.sleep(1.0)
        before = await engine_counts(http, base)
        rss0 = tree_rss(pid) if pid else None

        keys = list(distinct)
        specs = [Spec("ok", distinct[keys[i % len(keys)]][0], stream=i % 3 != 2,
                      ref_key=keys[i % len(keys)], focus=distinct[keys[i % len(keys)]][1])
                 for i in range(n_ok)]
        specs += faults(tok, model, max_len, n_disconnect)
        # interleave faults among the well-formed requests (deterministic order)
        oks, bad = specs[:n_ok], specs[n_ok:]
        specs = [s for i in range(max(len(oks), len(bad)))
                 for s in (oks[i:i + 1] + bad[i:i + 1])]

        peak = [rss0 or 0]
        stop = asyncio.Event()

        async def sample() -> None:
            while not stop.is_set():
                if pid:
                    peak[0] = max(peak[0], tree_rss(pid))
                await asyncio.sleep(0.25)

        sampler = asyncio.create_task(sample())
        t0 = time.monotonic()
        with StallWatch() as watch:
            try:
                await asyncio.wait_for(asyncio.gather(
                    *(run_one(http, base, s, refs, request_timeout) for s in specs)),
                    timeout=overall_timeout)
            except asyncio.TimeoutError:
                for s in specs:
                    s.outcome = s.outcome or "overall timeout"
        batch_s = time.monotonic() - t0
        after_counts, drain_s = await drain(http, base, 30)
        healthy = (await http.get(base + "/health")).status_code == 200
        # the same requests again on the (again quiet) server: it still answers correctly
        post = [Spec("ok", b, ref_key=k, focus=f) for k, (b, f) in distinct.items()]
        for s in post:
            await run_one(http, base, s, refs, request_timeout)
        await drain(http, base, 30)
        await asyncio.sleep(2.0)  # let freed memory settle
        stop.set()
        await sampler
        rss1 = tree_rss(pid) if pid else None

    failed: Counter[str] = Counter()
    by_kind: dict[str, dict[str, int]] = {}
    for name, s in [(s.kind, s) for s in specs] + [("ok_after", s) for s in post]:
        k = by_kind.setdefault(name, {"sent": 0, "completed": 0})
        k["sent"] += 1
        if s.outcome == "completed":
            k["completed"] += 1
        else:
            failed[s.outcome] += 1
    wrong = [s.detail for s in specs + post if s.outcome == "wrong output"]
    # tokens the engine generated for the hung-up streams: all it generated in the batch less
    # what the answered requests received; run to the end they would cost ~hangup_full tokens
    answered = sum(len(s.result.get("token_ids", [])) for s in specs
                   if s.kind in ("ok", "boundary"))
    hangup_tokens = int(after_counts["generated"] - before["generated"]) - answered
    hangup_full = sum(s.body["max_tokens"] for s in specs if s.kind == "disconnect")
    mem = None
    if rss0:
        tol = max(RSS_TOL_FRAC * rss0, RSS_TOL_BYTES)
        mem = {"baseline_mb": round(rss0 / 2**20, 1), "peak_mb": round(peak[0] / 2**20, 1),
               "after_mb": round(rss1 / 2**20, 1), "delta_mb": round((rss1 - rss0) / 2**20, 1),
               "tolerance_mb": round(tol / 2**20, 1), "ok": rss1 - rss0 <= tol}
    stalled = watch.longest > STALL_LIMIT_S
    checks = {
        "all_completed": completion_check(failed, stalled),
        "zero_wrong_outputs": not wrong,
        "warmup_clean": not warm_bad,
        # None: the client itself stalled, so it may have hung up only after the streams ended
        "hangups_aborted": (hangup_tokens <= 0.25 * hangup_full if not stalled else None),
        "drained": after_counts["running"] == 0 and after_counts["waiting"] == 0,
        "healthy": healthy,
        "memory_near_baseline": mem["ok"] if mem else None,
    }
    return {
        "sent": len(specs) + len(post), "completed": sum(k["completed"] for k in by_kind.values()),
        "failed": dict(failed), "wrong_outputs": len(wrong), "wrong_detail": wrong[:10],
        "by_kind": by_kind, "distinct_well_formed": len(distinct),
        "engine": {"hangup_tokens": hangup_tokens, "hangup_tokens_if_run_out": hangup_full,
                   "running_after": after_counts["running"],
                   "waiting_after": after_counts["waiting"], "drain_s": round(drain_s, 2)},
        "memory": mem, "batch_s": round(batch_s, 2), "client_stall_s": round(watch.longest, 3),
        "total_s": round(time.monotonic() - t_start, 2), "warmup_failures": warm_bad,
        "checks": checks, "ok": all(v is not False for v in checks.values()),
    }


def completion_check(failed: dict[str, int], stalled: bool) -> bool | None:
    """True: every request completed. None (not judged): the only failures are transport
    errors and the client stalled, so it may have broken them itself. False otherwise."""
    if not failed:
        return True
    if stalled and all(reason.startswith("transport error") for reason in failed):
        return None
    return False


async def run_judged(base: str, model_dir: str | Path, *, attempts: int = 3, **kw: Any) -> dict:
    """:func:`run_load`, again (up to ``attempts`` batches) while a check is unjudged because
    the client stalled; the last summary."""
    summary: dict = {}
    for _ in range(max(1, attempts)):
        summary = await run_load(base, model_dir, **kw)
        if all(summary["checks"][k] is not None for k in ("all_completed", "hangups_aborted")):
            break
    return summary


# ----------------------------------------------------------------------------- CLI

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, block: int = 32, max_len: int = 2048,
                 log: Path | None = None) -> tuple[subprocess.Popen, str]:
    """``dac serve`` on a free loopback port with the forcing logits processor; (proc, url)."""
    port = _free_port()
    tmpl = Path(tempfile.mkdtemp(prefix="dac-serve-")) / "chat.jinja"
    tmpl.write_text(CHAT_TEMPLATE)
    cmd = [sys.executable, "-m", "dac.cli", "serve", "--model", str(model), "--port", str(port),
           "--block-size", str(block), "--max-model-len", str(max_len), "--dtype", "float32",
           "--", "--max-num-seqs", "32", "--seed", "0", "--chat-template", str(tmpl),
           "--logits-processors", "dac.engines.vllm.forcing:ForcedTokensLogitsProcessor"]
    out = open(log or os.devnull, "wb")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                            env=dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1"))
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(2)
    stop_server(proc)
    raise RuntimeError("dac serve did not start" + (f" (see {log})" if log else ""))


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _pid_on_port(port: int) -> int | None:
    import psutil

    try:
        for c in psutil.net_connections(kind="tcp"):
            if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN and c.pid:
                return c.pid
    except psutil.AccessDenied:
        pass
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="a running dac serve (127.0.0.1 only); else one is started")
    ap.add_argument("--model", help="model directory (its tokenizer builds the prompts)")
    ap.add_argument("--tiny", action="store_true", help="build and serve a tiny random Llama")
    ap.add_argument("--pid", type=int, help="server pid for RSS (default: found by port)")
    ap.add_argument("--ok", type=int, default=24, help="well-formed requests in the batch")
    ap.add_argument("--disconnect", type=int, default=8, help="clients that hang up")
    ap.add_argument("--timeout", type=float, default=180.0, help="overall batch timeout (s)")
    ap.add_argument("--attempts", type=int, default=3,
                    help="run the batch again while a check is unjudged (client stall)")
    ap.add_argument("--out", type=Path, help="write the summary here as JSON")
    a = ap.parse_args(argv)
    proc = None
    model = Path(a.model) if a.model else None
    try:
        if a.tiny:
            from dac.models import tiny_model, tiny_tokenizer

            model = Path(tempfile.mkdtemp(prefix="dac-tiny-"))
            tok = tiny_tokenizer()
            tiny_model("llama", vocab_size=len(tok), hidden=128, heads=2, kv_heads=1,
                       head_dim=64, seed=5).save_pretrained(model)
            tok.save_pretrained(model)
        if model is None:
            ap.error("--model or --tiny is required")
        base, pid = a.url, a.pid
        if base is None:
            proc, base = start_server(model, log=model / "server.log")
            pid = proc.pid
        elif pid is None:
            pid = _pid_on_port(urlparse(base).port or 80)
        summary = asyncio.run(run_judged(base, model, attempts=a.attempts, pid=pid, n_ok=a.ok,
                                         n_disconnect=a.disconnect, overall_timeout=a.timeout))
    finally:
        if proc is not None:
            stop_server(proc)
    text = json.dumps(summary, indent=2)
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
