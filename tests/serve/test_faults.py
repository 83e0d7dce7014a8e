"""``dac serve`` under faults and load: hang-ups, oversized prompts, bad JSON, bad DAC options.

One concurrent batch (bench/serve_load.py) mixes well-formed requests with faults on the shared
loopback server; every well-formed request must return what it returned alone on the quiet
server, every fault a 4xx (or an engine abort for a hang-up), and the server must drain, stay
healthy and return near its RSS baseline. Bounded: fixed request counts, 60 s per request,
180 s for the batch.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest

pytest.importorskip("vllm")
httpx = pytest.importorskip("httpx")
psutil = pytest.importorskip("psutil")

pytestmark = pytest.mark.vllm
BENCH = Path(__file__).resolve().parents[2] / "bench" / "serve_load.py"


@pytest.fixture(scope="module")
def serve_load():
    spec = importlib.util.spec_from_file_location("serve_load", BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["serve_load"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("serve_load", None)


def server_pid(base: str) -> int:
    """The ``dac serve`` process started by the fixture (a child of this process)."""
    port = str(urlparse(base).port)
    for p in psutil.Process().children(recursive=True):
        try:
            cmd = p.cmdline()
        except psutil.Error:
            continue
        if "serve" in cmd and port in cmd:
            return p.pid
    raise RuntimeError(f"no dac serve child process on port {port}")


def test_faults_and_load(server, served_model, serve_load):
    summary = asyncio.run(serve_load.run_judged(server, served_model, pid=server_pid(server),
                                                n_ok=24, n_disconnect=8))
    print("\nserve fault/load summary:", json.dumps(summary, indent=1))
    check_summary(summary)


@pytest.mark.parametrize("with_dac", [False, True])
def test_a_hung_up_stream_is_aborted(server, served_model, serve_load, with_dac):
    """A client that closes a long stream after two chunks: the engine stops generating (in
    one of up to six hang-ups: see ``quiet_hang_up``)."""
    res = asyncio.run(serve_load.quiet_hang_up(
        server, served_model, dac=serve_load.DAC_OPTS if with_dac else None))
    assert res["outcome"] == "completed", res
    assert res["aborted"] is not None, f"the client stalled in every attempt: {res}"
    assert res["aborted"], res


@pytest.mark.parametrize("runs, aborted, n", [([2], True, 1), ([1697, 2], True, 2),
                                               ([1697] * 6, False, 6)])
def test_hang_up_attempts_stop_at_the_first_abort(serve_load, served_model, monkeypatch,
                                                  runs, aborted, n):
    """The retry logic alone (a fake server): an abort ends the attempts, a server that never
    aborts fails every one."""
    total = {"generated": 0.0}
    queue = list(runs)

    async def counts(http, base):
        return {"running": 0, "waiting": 0, **total}

    async def hang_up(base, body, timeout):
        total["generated"] += queue.pop(0)
        return "completed"

    class Http:
        def __init__(self, **kw):
            pass

        async def __aenter__(self):
            return self

        async def __aexit__(self, *exc):
            return None

        async def get(self, url):
            return httpx.Response(200, json={"data": [{"id": "m", "max_model_len": 2048}]},
                                  request=httpx.Request("GET", url))

    monkeypatch.setattr(serve_load, "engine_counts", counts)
    monkeypatch.setattr(serve_load, "hang_up", hang_up)
    monkeypatch.setattr(serve_load.httpx, "AsyncClient", Http)
    res = asyncio.run(serve_load.quiet_hang_up("http://127.0.0.1:1", served_model))
    assert res["aborted"] is aborted
    assert len(res["attempts"]) == n


def test_stall_watch_sees_the_process_frozen(serve_load):
    """What the hang-up check guards against: the whole client process stopped for a while."""
    import os
    import subprocess
    import time

    pid = os.getpid()
    with serve_load.StallWatch() as watch:
        subprocess.run(["sh", "-c", f"kill -STOP {pid}; sleep 1.2; kill -CONT {pid}"], check=True)
        time.sleep(0.1)
    assert watch.longest > serve_load.STALL_LIMIT_S


def check_summary(summary: dict) -> None:
    assert summary["wrong_outputs"] == 0, summary["wrong_detail"]
    # None: transport errors only, while the client itself stalled (it may have broken them)
    assert summary["checks"]["all_completed"] is not False, summary["failed"]
    if summary["checks"]["all_completed"]:
        assert summary["failed"] == {}
        assert summary["by_kind"]["ok"] == {"sent": 24, "completed": 24}
        assert summary["by_kind"]["disconnect"]["completed"] == 8
        assert summary["by_kind"]["boundary"]["completed"] == 1  # output capped at max_model_len
    # hung-up streams were aborted, not run out (None: the client itself stalled, so it may
    # have hung up after they ended; test_a_hung_up_stream_is_aborted judges them alone)
    assert summary["checks"]["hangups_aborted"] is not False, summary["engine"]
    assert summary["checks"]["drained"] and summary["checks"]["healthy"]
    assert summary["memory"]["ok"], summary["memory"]
    assert summary["ok"]


def test_only_a_stalled_clients_transport_errors_go_unjudged(serve_load):
    check = serve_load.completion_check
    assert check({}, stalled=True) is True
    assert check({"transport error (ReadError)": 1}, stalled=True) is None
    assert check({"transport error (ReadError)": 1}, stalled=False) is False
    assert check({"transport error (ReadError)": 1, "http 500": 1}, stalled=True) is False
    assert check({"wrong output": 2}, stalled=True) is False


def test_load_script_detects_wrong_output(serve_load, monkeypatch):
    """The comparison is not vacuous: a differing token or a missing focus counts as wrong."""
    ref = {"token_ids": [1, 2], "text": "ab", "finish_reason": "length",
           "dac": {"timeline": [{"sections": [2]}]}}

    def returning(out):
        async def fake_send(*_a, **_k):
            return out
        return fake_send

    spec = serve_load.Spec("ok", {}, ref_key="k", focus=2)
    monkeypatch.setattr(serve_load, "send", returning(dict(ref, token_ids=[1, 3])))
    asyncio.run(serve_load.run_one(None, "", spec, {"k": ref}, 1.0))
    assert spec.outcome == "wrong output" and "token_ids" in spec.detail

    other = dict(ref, dac={"timeline": [{"sections": [3]}]})  # same as the reference, wrong focus
    monkeypatch.setattr(serve_load, "send", returning(other))
    asyncio.run(serve_load.run_one(None, "", spec, {"k": other}, 1.0))
    assert spec.outcome == "wrong output" and "focus" in spec.detail

    spec = serve_load.Spec("ok", {}, ref_key="k", focus=2)
    monkeypatch.setattr(serve_load, "send", returning(dict(ref)))
    asyncio.run(serve_load.run_one(None, "", spec, {"k": ref}, 1.0))
    assert spec.outcome == "completed"


def test_metric_parser(serve_load):
    text = ('# HELP x\nvllm:generation_tokens_total{engine="0",model_name="m"} 42.0\n'
            'vllm:num_requests_running{engine="0",model_name="m"} 3.0\n'
            'vllm:request_success_total{engine="0",finished_reason="abort",model_name="m"} 5.0\n'
            'vllm:request_success_total{engine="0",finished_reason="stop",model_name="m"} 7.0\n')
    assert serve_load.metric(text, "vllm:num_requests_running") == 3
    assert serve_load.metric(text, "vllm:generation_tokens_total") == 42
    assert serve_load.metric(text, "vllm:request_success_total", finished_reason="abort") == 5
    assert serve_load.metric(text, "vllm:request_success_total") == 12
