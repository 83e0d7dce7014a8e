"""The vLLM plugin on a hybrid model: a tiny random Gemma-3 (3 sliding-window layers, 1 global).

vLLM's hybrid KV-cache manager gives the sliding layers and the full-attention layer their own
KV-cache groups and block tables; the plugin compacts the full-attention group's table only.
One engine for the module (started with ``DAC_VLLM_TRACE``, so every metadata build of its
worker is logged: which group, whether it compacts, which rows it changed):

* keep-all (policy ``full``, and ``dac`` with no directive) equals a plain request of the same
  engine and the Hugging Face model's own greedy decoding;
* focus / local runs equal the reference engine (:class:`dac.engines.hf.DACSession`, which masks
  the global layers only), forced tokens, log-probs within 1e-4, and the mask mattered;
* the sliding-window groups' block tables and lengths are never changed;
* ``VLLMEngine`` results (timeline, attended tokens over the global layers, costs) equal
  ``dac.engines.hf.generate``'s.
"""

from __future__ import annotations

import json
import os
from types import SimpleNamespace as NS

import pytest

pytest.importorskip("vllm")

from vllm import SamplingParams  # noqa: E402
from vllm.inputs import TokensPrompt  # noqa: E402

from dac.planning.blocks import PlanConfig  # noqa: E402
from tests.vllm.test_equality import layout_of, script  # noqa: E402
from tests.vllm.vllm_reference import BLOCK, MAX_BATCHED, hf_run  # noqa: E402

pytestmark = pytest.mark.vllm
TOL = 1e-4
WINDOW = 64  # sliding window of the local layers: far shorter than the prompts
LAYER_TYPES = ["sliding_attention"] * 3 + ["full_attention"]
CFG = PlanConfig(block_size=BLOCK, sink_tokens=32, window=32, local_window=64)


@pytest.fixture(scope="module")
def g3_dir(tmp_path_factory):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from dac.models import tiny_tokenizer

    path = tmp_path_factory.mktemp("tiny-gemma3-hybrid")
    tok = tiny_tokenizer()
    cfg = AutoConfig.for_model(
        "gemma3_text", vocab_size=len(tok), hidden_size=128, intermediate_size=256,
        num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=1, head_dim=64,
        max_position_embeddings=4096, sliding_window=WINDOW, layer_types=LAYER_TYPES,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, initializer_range=0.1)
    torch.manual_seed(5)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def g3_hf(g3_dir):
    from dac.models import load

    return load(g3_dir, dtype="float32")


@pytest.fixture(scope="module")
def trace_file(tmp_path_factory):
    return tmp_path_factory.mktemp("dac-trace") / "builds.jsonl"


@pytest.fixture(scope="module")
def g3_engine(g3_dir, trace_file):
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from dac.engines.vllm.engine import VLLMEngine
    from dac.engines.vllm.forcing import ForcedTokensLogitsProcessor

    old = os.environ.get("DAC_VLLM_TRACE")
    os.environ["DAC_VLLM_TRACE"] = str(trace_file)  # read by the spawned engine's builders
    try:
        eng = VLLMEngine(str(g3_dir), block_size=BLOCK, dtype="float32", max_model_len=4096,
                         max_num_batched_tokens=MAX_BATCHED, max_num_seqs=8, seed=0,
                         logits_processors=[ForcedTokensLogitsProcessor])
    finally:
        if old is None:
            os.environ.pop("DAC_VLLM_TRACE", None)
        else:
            os.environ["DAC_VLLM_TRACE"] = old
    yield eng
    try:
        eng.llm.llm_engine.engine_core.shutdown()
    except Exception:  # noqa: BLE001 - best effort at module end
        pass


def run(engine, layouts, scripts, policies, max_new, cfg=CFG):
    """(ids, log-probs) per request; policy None = a plain vLLM request (no DAC option)."""
    params = []
    for lay, sc, pol in zip(layouts, scripts, policies):
        extra = {"force_token_ids": sc} if sc else {}
        if pol is None:
            params.append(SamplingParams(max_tokens=max_new, temperature=0.0, logprobs=1,
                                         extra_args=extra or None))
        else:
            params.append(engine.sampling_params(lay, policy=pol, config=cfg,
                                                 max_new_tokens=max_new, logprobs=1,
                                                 extra_args=extra))
    outs = engine.llm.generate([TokensPrompt(prompt_token_ids=lay.input_ids) for lay in layouts],
                               params, use_tqdm=False)
    res = []
    for o in outs:
        c = o.outputs[0]
        res.append((list(c.token_ids),
                    [c.logprobs[i][t].logprob for i, t in enumerate(c.token_ids)]))
    return res


def max_diff(a, b):
    return max(abs(x - y) for x, y in zip(a, b))


def records(trace_file):
    if not trace_file.exists():
        return []
    return [json.loads(line) for line in trace_file.read_text().splitlines() if line.strip()]


def test_engine_accepts_the_hybrid_and_splits_its_kv_groups(g3_engine, g3_hf):
    from dac.engines.vllm.support import unsupported_reasons

    vcfg = g3_engine.llm.llm_engine.vllm_config
    assert list(vcfg.model_config.hf_text_config.layer_types) == LAYER_TYPES
    assert not vcfg.scheduler_config.disable_hybrid_kv_cache_manager  # one group per type
    assert unsupported_reasons(vcfg) == []
    assert g3_engine.costs is not None and g3_engine.costs["global_layers"] == 1


def test_keep_all_equals_plain_vllm_and_hf(g3_engine, g3_hf):
    """Policy full, and policy dac on text without directives (global mode: every block kept),
    score exactly as a plain request and as transformers' own decoding. A random model repeats
    itself when free, so the tokens are forced (varied text), then 4 free greedy steps."""
    model, tok = g3_hf
    lay = layout_of(tok, 8)
    assert lay.prompt_len > 4 * WINDOW
    sc = script(tok, "the river runs past the mountain and the city 1 2 3")
    assert len(set(sc)) > 8
    n = len(sc) + 4
    outs = run(g3_engine, [lay, lay, lay], [sc, sc, sc], [None, "full", "dac"], n)
    (p_ids, p_lp), (f_ids, f_lp), (d_ids, d_lp) = outs
    assert p_ids == f_ids == d_ids and p_ids[:len(sc)] == sc
    assert max_diff(p_lp, f_lp) <= TOL and max_diff(p_lp, d_lp) <= TOL
    h_ids, h_lp, _ = hf_run(model, tok, lay, sc, n)
    assert h_ids == p_ids
    assert max_diff(h_lp, p_lp) <= TOL
    print(f"[hybrid keep-all] {len(p_ids)} tokens, max |d logprob| vs HF = "
          f"{max_diff(h_lp, p_lp):.2e}")


@pytest.mark.parametrize("text", ["[[focus S2]] the river [[global]] the city",
                                  "[[local]] the number 1 2 3 4 5 6 7 8 9 0",
                                  "the river [[focus S1, S7]] harbour 1 2 3"])
def test_dac_equals_the_reference_engine(g3_engine, g3_hf, text):
    """Masked decoding through the plugin equals the HF reference (global layer masked, sliding
    layers on their own window) on the same forced tokens."""
    model, tok = g3_hf
    lay = layout_of(tok, 8)
    sc = script(tok, text)
    max_new = len(sc) + 6  # a few free greedy steps after the script
    (v_ids, v_lp), = run(g3_engine, [lay], [sc], ["dac"], max_new)
    h_ids, h_lp, trace = hf_run(model, tok, lay, sc, max_new, "dac", CFG)
    assert v_ids == h_ids
    d = max_diff(v_lp, h_lp)
    assert d <= TOL, f"max |d logprob| = {d:.2e}"
    assert sum(s.read for s in trace.steps) < sum(s.length for s in trace.steps)
    # the mask mattered: full attention scores the same tokens differently
    _, f_lp, _ = hf_run(model, tok, lay, v_ids, max_new)
    assert max_diff(f_lp, v_lp) > 1e-3
    print(f"[hybrid dac] {text!r}: max |d logprob| vs reference = {d:.2e}")


def test_sliding_groups_are_never_compacted(g3_engine, g3_hf, trace_file):
    model, tok = g3_hf
    trace_file.write_text("")
    lays = [layout_of(tok, 8), layout_of(tok, 14, repeat=4), layout_of(tok, 6)]
    assert lays[1].prompt_len > 3 * MAX_BATCHED  # chunked prefill too
    texts = ["[[focus S3]] the city [[global]] river", "[[local]] 1 2 3 4",
             "plain words only"]
    run(g3_engine, lays, [script(tok, t) for t in texts], ["dac", "dac", None], 12)
    recs = records(trace_file)
    assert recs, "the engine wrote no trace"
    full = [r for r in recs if r["compacts"]]
    local = [r for r in recs if not r["compacts"]]
    assert full and local
    assert {r["spec"] for r in full} == {"FullAttentionSpec"}
    assert {r["spec"] for r in local} == {"SlidingWindowSpec"}
    assert {r["window"] for r in local} == {WINDOW}
    assert all(len(r["layers"]) == 1 and r["layers"][0].endswith("layers.3.self_attn.attn")
               for r in full), {tuple(r["layers"]) for r in full}
    assert all(r["changed"] == [] for r in local)  # never changed, not even one row
    changed = [c for r in full for c in r["changed"]]
    assert changed and all(new < old for _, old, new in changed)
    rows = {row for row, _, _ in changed}
    assert rows <= {0, 1, 2} and len(rows) >= 1


def test_engine_interface_counts_the_global_layers(g3_engine, g3_hf):
    """VLLMEngine's results equal dac.engines.hf.generate's: attended tokens (over the global
    layer), timeline, and the model's cost constants (1 global layer, the sliding layers'
    per-step read beside it)."""
    from dac.engines.hf.generate import generate

    model, tok = g3_hf
    lays = [layout_of(tok, 6), layout_of(tok, 4)]
    v = g3_engine.generate(lays, policy="streaming", config=CFG, max_new_tokens=12)
    h = [generate(model, tok, [lay], policy="streaming", config=CFG, max_new_tokens=12)[0]
         for lay in lays]
    for a, b in zip(v, h):
        assert a.generated_ids == b.generated_ids
        assert a.to_dict() == b.to_dict()
        assert a.fraction < 1
        assert a.costs["global_layers"] == 1 and a.costs["local_bytes_per_step"] > 0


# -- no engine: what is accepted and refused ----------------------------------------------

def _config(layer_types=None, window=None, model_type="gemma3_text", hma_off=False):
    class Mode:
        def has_full_cudagraphs(self):
            return False

    text = NS(model_type=model_type, sliding_window=window)
    if layer_types is not None:
        text.layer_types = layer_types
    return NS(speculative_config=None,
              scheduler_config=NS(async_scheduling=False,
                                  disable_hybrid_kv_cache_manager=hma_off),
              cache_config=NS(enable_prefix_caching=False),
              model_config=NS(get_sliding_window=lambda: window, enforce_eager=True,
                              hf_text_config=text),
              compilation_config=NS(cudagraph_mode=Mode()))


def test_hybrid_support_is_decided_per_layer_type():
    from dac.engines.vllm.support import unsupported_reasons

    sw, fa, la = "sliding_attention", "full_attention", "linear_attention"
    assert unsupported_reasons(_config([sw] * 5 + [fa], window=1024)) == []  # Gemma-3
    assert unsupported_reasons(_config([sw, fa] * 2, window=4096, model_type="gemma2")) == []
    cases = {
        "no full-attention layer": _config([sw] * 4, window=64),
        "every layer uses sliding-window": _config(None, window=128, model_type="mistral"),
        "linear-attention": _config([la] * 3 + [fa], model_type="qwen3_next"),
        "hybrid KV-cache manager is off": _config([sw, fa], window=64, hma_off=True),
        "attention sinks": _config([sw, fa], window=128, model_type="gpt_oss"),
        "of type mamba": _config(["mamba", fa], model_type="x"),
    }
    for word, cfg in cases.items():
        reasons = unsupported_reasons(cfg)
        assert len(reasons) == 1 and word in reasons[0], (word, reasons)


def test_only_full_attention_groups_compact():
    import torch
    from vllm.v1.kv_cache_interface import FullAttentionSpec, SlidingWindowSpec

    from dac.engines.vllm.backends import compacts

    kw = dict(block_size=32, num_kv_heads=1, head_size=64, dtype=torch.float32)
    full, slid = NS(sliding_window=None, attn_type="decoder"), NS(sliding_window=64,
                                                                  attn_type="decoder")
    assert compacts(FullAttentionSpec(**kw), [full])
    assert not compacts(SlidingWindowSpec(sliding_window=64, **kw), [slid])
    # the hybrid manager off: one merged spec that carries the window, both layer kinds
    assert not compacts(FullAttentionSpec(sliding_window=64, **kw), [full, slid])
    assert not compacts(FullAttentionSpec(**kw), [full, slid])
    assert not compacts(FullAttentionSpec(**kw), [])
