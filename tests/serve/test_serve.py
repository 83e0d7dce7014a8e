"""``dac serve``: DAC options per request, metadata on responses, 400s, a bounded load test.

One server subprocess (loopback) for the module. The model is made to "write" directives with
the forcing logits processor (``force_token_ids``), and the server's tokens and metadata are
checked against the Hugging Face engine forced the same way.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

pytest.importorskip("vllm")
httpx = pytest.importorskip("httpx")

from dac.planning.blocks import PlanConfig  # noqa: E402
from dac.protocol.context import build_prompt  # noqa: E402

pytestmark = pytest.mark.vllm
CFG = PlanConfig(block_size=32, sink_tokens=32, window=32, local_window=64)
DAC_OPTS = {"sink_tokens": 32, "window": 32, "local_window": 64}


@pytest.fixture(scope="module")
def hf(served_model):
    from dac.models import load

    return load(served_model, dtype="float32")


def layout_of(tok, n: int, repeat: int = 2):
    secs = [(f"The river {i} runs past the mountain and the city {i} has a harbour. " * repeat)
            .strip() for i in range(n)]
    return build_prompt(tok, secs, "What is the value?")


def body(model_path, prompt, max_tokens=12, force=None, stream=False, dac=None, **kw):
    b = {"model": str(model_path), "prompt": prompt, "max_tokens": max_tokens,
         "temperature": 0, "stream": stream, **kw}
    xargs = {}
    if force:
        xargs["force_token_ids"] = force
    if xargs:
        b["vllm_xargs"] = xargs
    if dac is not None:
        b["dac"] = dac
    return b


def parse_stream(text: str) -> list[dict]:
    events = [e[len("data: "):] for e in text.split("\n\n") if e.startswith("data: ")]
    assert events and events[-1] == "[DONE]", "stream not terminated by [DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_metadata_matches_hf(server, served_model, hf):
    from tests.helpers import forcing

    from dac.engines.hf.generate import generate

    model, tok = hf
    lay = layout_of(tok, 8)
    text = "[[focus S2]] the river [[global]] the city"
    force = tok(text, add_special_tokens=False)["input_ids"]
    r = httpx.post(server + "/v1/completions", timeout=120, json=body(
        served_model, lay.text, 20, force, dac=DAC_OPTS, return_token_ids=True))
    assert r.status_code == 200, r.text
    ch = r.json()["choices"][0]
    h = generate(model, tok, [lay], policy="dac", config=CFG, max_new_tokens=20,
                 **forcing(tok, [text], [lay]))[0]
    assert ch["token_ids"][: len(h.generated_ids)] == h.generated_ids
    meta, ref = ch["dac"], h.to_dict()
    assert meta["sections"] == 8  # rebuilt from the [S1].. markers of the text prompt
    assert meta["timeline"] == ref["timeline"]
    assert [e["mode"] for e in meta["timeline"]] == ["focus", "global"]
    assert meta["kv"] == ref["kv"] and meta["kv"]["fraction"] < 1


def test_explicit_spans_and_plain_requests(server, served_model, hf):
    tok = hf[1]
    lay = layout_of(tok, 4)
    flat = [x for s in lay.sections for x in (s.start, s.end)]
    r = httpx.post(server + "/v1/completions", timeout=120, json=body(
        served_model, lay.input_ids, 6, vllm_xargs={"dac": 1, "dac_sections": flat}))
    assert r.status_code == 200, r.text
    ch = r.json()["choices"][0]
    assert ch["dac"]["sections"] == 4 and "token_ids" not in ch
    r = httpx.post(server + "/v1/completions", timeout=120,
                   json=body(served_model, lay.input_ids, 6, dac=False))  # opted out
    assert r.status_code == 200 and "dac" not in r.json()["choices"][0]


def test_dac_by_default_answers_as_the_api(server, served_model, hf):
    """A request that says nothing of DAC is served under DAC with the model's own plan and
    sampling, and answers what `generate` (the README's snippet) answers."""
    from dac.engines.hf.generate import generate

    model, tok = hf
    lay = layout_of(tok, 6)
    b = {"model": str(served_model), "prompt": lay.text, "max_tokens": 8,  # no temperature
         "return_token_ids": True}
    r = httpx.post(server + "/v1/completions", timeout=120, json=b)
    assert r.status_code == 200, r.text
    ch = r.json()["choices"][0]
    ref = generate(model, tok, [lay], max_new_tokens=8)[0]
    assert ch["dac"]["applied"] and ch["dac"]["policy"] == "dac"
    assert ch["dac"]["kv"] == ref.to_dict()["kv"]
    assert ch["token_ids"][:len(ref.generated_ids)] == ref.generated_ids
    assert ch["dac"]["answer"] == ref.answer  # (vLLM's own "text" may detokenize bytes apart)


@pytest.mark.parametrize("stream", [False, True])
def test_chat_completions(server, served_model, hf, stream):
    from dac.protocol.context import render_context
    from dac.protocol.prompt import SYSTEM_PROMPT

    tok = hf[1]
    context, _ = render_context([f"The harbour {i} is by the river. " * 6 for i in range(5)])
    msgs = [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": f"Document:\n{context}\n\nQuestion: Which harbour?"}]
    force = tok("[[focus S4]] the harbour", add_special_tokens=False)["input_ids"]
    b = {"model": str(served_model), "messages": msgs, "max_tokens": 10, "temperature": 0,
         "stream": stream, "vllm_xargs": {"force_token_ids": force, "dac": 1,
                                          "dac_sink_tokens": 0, "dac_window": 32,
                                          "dac_keep_preamble": 0}}
    r = httpx.post(server + "/v1/chat/completions", timeout=120, json=b)
    assert r.status_code == 200, r.text
    ch = parse_stream(r.text)[-1]["choices"][0] if stream else r.json()["choices"][0]
    meta = ch["dac"]
    assert meta["sections"] == 5
    assert meta["timeline"][0]["sections"] == [4]
    assert 0 < meta["kv"]["fraction"] < 1


@pytest.mark.parametrize("dac,expect", [
    ({"window": "abc"}, "dac_window must be an integer"),
    ({"windw": 3}, "unknown DAC option"),
    ({"policy": "quest"}, "query-aware"),
    ({"policy": "nope"}, "unknown policy"),
    ({"block_size": 48}, "multiple of the engine's KV block size 32"),
    ({"sections": [5, 3]}, "bad span"),
    ({"sections": [1, 2, 3]}, "pairs"),
    ({"window": 0}, "window must be positive"),
    ("yes", "'dac' must be an object"),
])
def test_malformed_options_are_400(server, served_model, dac, expect):
    r = httpx.post(server + "/v1/completions", timeout=60,
                   json=body(served_model, "hello", 4, dac=dac))
    assert r.status_code == 400
    assert expect in r.json()["error"]["message"]


def test_impossible_dac_requests_are_400(server, served_model, hf):
    """Asked for and impossible: 400 before the engine, never a silent full-attention 200."""
    r = httpx.post(server + "/v1/completions", timeout=60,
                   json=body(served_model, "no sections here", 4, dac={}))
    assert r.status_code == 400 and "no section markers" in r.json()["error"]["message"]
    lay = layout_of(hf[1], 3)
    r = httpx.post(server + "/v1/completions", timeout=60, json=body(
        served_model, lay.input_ids, 4, dac={"sections": [0, 5, 5, 10 ** 6]}))
    assert r.status_code == 400 and "beyond the prompt" in r.json()["error"]["message"]


def test_prompt_without_sections_by_default_says_why(server, served_model):
    """Not asked for (DAC by default) on a prompt without sections: full attention, said."""
    r = httpx.post(server + "/v1/completions", timeout=60,
                   json=body(served_model, "no sections here", 4))
    assert r.status_code == 200
    meta = r.json()["choices"][0]["dac"]
    assert meta["applied"] is False and "no section markers" in meta["reason"]


def test_concurrent_streaming_load(server, served_model, hf):
    """32 concurrent streaming clients, 2 requests each, bounded in time; all complete."""
    tok = hf[1]
    lays = [layout_of(tok, 4 + i % 4, repeat=1) for i in range(4)]
    clients, per_client, max_tokens = 32, 2, 12

    async def client(i: int, http: httpx.AsyncClient) -> list[tuple[int, dict, str]]:
        out = []
        for j in range(per_client):
            lay = lays[(i + j) % len(lays)]
            sec = 1 + (i % lay.num_sections)
            use_dac = (i + j) % 4 != 3  # a quarter of the requests opt out of DAC
            text = f"[[focus S{sec}]] the city"
            force = tok(text, add_special_tokens=False)["input_ids"]
            b = body(served_model, lay.text, max_tokens, force, stream=True,
                     dac=DAC_OPTS if use_dac else False)
            r = await http.post(server + "/v1/completions", json=b)
            assert r.status_code == 200, r.text
            out.append((sec if use_dac else 0, parse_stream(r.text)[-1], text))
        return out

    async def main():
        limits = httpx.Limits(max_connections=clients)
        async with httpx.AsyncClient(timeout=120, limits=limits) as http:
            return await asyncio.wait_for(
                asyncio.gather(*(client(i, http) for i in range(clients))), timeout=400)

    t0 = time.monotonic()
    results = asyncio.run(main())
    elapsed = time.monotonic() - t0
    done = [x for r in results for x in r]
    assert len(done) == clients * per_client
    for sec, last, _ in done:
        ch = last["choices"][0]
        assert ch["finish_reason"] in ("length", "stop")
        if sec == 0:
            assert "dac" not in ch
            continue
        meta = ch["dac"]
        assert meta["timeline"][0]["sections"] == [sec]
        assert meta["timeline"][0]["mode"] == "focus"
        assert 0 < meta["kv"]["fraction"] < 1
        assert "token_ids" not in ch
    print(f"load test: {len(done)} streamed requests in {elapsed:.1f} s")
