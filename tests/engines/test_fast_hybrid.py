"""The fast engine on hybrid models: sliding-window rings, Gated DeltaNet states and per-layer
global caches, against transformers' own decoding (CPU, fp32, eager).

The tiny models and the independent dense reference (transformers' decoding loop with the
dropped positions masked in the global layers only) are those of ``test_hybrid``.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
import torch

from dac.engines.fast import FastDecoder
from dac.engines.hf import generate
from dac.planning import num_blocks
from tests.engines import test_hybrid
from tests.engines.test_hybrid import _REF, BS, CFG, CONFIGS, RandomPolicy, global_layers, layout
from tests.helpers import IdsTokenizer

NAMES = list(CONFIGS)
SLIDING = [n for n in NAMES if "sliding_attention" in CONFIGS[n]["layer_types"]]
WINDOW = 16


@functools.lru_cache(maxsize=None)
def build(name: str) -> Any:
    """``test_hybrid``'s tiny model, built once per module (no test changes its weights;
    Gemma-4's per-layer embedding table makes building it slow)."""
    return test_hybrid.build(name)


def device_of(model: Any) -> torch.device:
    return next(model.parameters()).device


def reference(model: Any, ids: list[int], blocks: list[list[int]] | None, steps: int,
              bs: int = BS):
    """Logits of transformers' own decode loop over ``ids`` (prefill ``len(ids) - steps``,
    then ``steps`` one-token steps), the global layers masked to ``blocks[t]`` at step ``t``
    (all of them when ``blocks`` is None), and its final cache."""
    dev = device_of(model)
    prev = model.config._attn_implementation
    model.set_attn_implementation("dac_hybrid_reference")
    _REF["global"] = global_layers(model)
    n0 = len(ids) - steps
    try:
        with torch.no_grad():
            _REF["keep"] = None
            out = model(input_ids=torch.tensor([ids[:n0]], device=dev), use_cache=True)
            cache, logits = out.past_key_values, [out.logits[0, -1]]
            for t in range(steps):
                length = n0 + t + 1
                keep = None
                if blocks is not None:
                    keep = torch.zeros(1, 1, length, dtype=torch.bool, device=dev)
                    for j in blocks[t]:
                        keep[..., j * bs:(j + 1) * bs] = True
                _REF["keep"] = keep
                out = model(input_ids=torch.tensor([[ids[length - 1]]], device=dev),
                            past_key_values=cache, use_cache=True,
                            position_ids=torch.tensor([[length - 1]], device=dev))
                cache = out.past_key_values
                logits.append(out.logits[0, -1])
    finally:
        _REF["keep"] = None
        model.set_attn_implementation(prev)
    return logits, cache


def drive(dec: FastDecoder, prompts: list[list[int]], feed: list[list[int]],
          plans: list[list[list[int]]] | None = None) -> list[torch.Tensor]:
    """Prefill, then one step per fed token (``feed[row][t]``), the kept blocks of step ``t``
    ``plans[t][row]`` (all blocks when None): the logits ``[B, V]`` of every step."""
    out = [dec.prefill(prompts).float().cpu()]
    for t in range(len(feed[0])):
        dec.lengths = [n + 1 for n in dec.lengths]
        blocks = plans[t] if plans is not None else \
            [list(range(num_blocks(n, dec.config.block_size))) for n in dec.lengths]
        dec.set_plan(blocks)
        dec.set_tokens([f[t] for f in feed])
        out.append(dec.run_step().float().cpu().clone())
    return out


def random_plans(lengths: list[int], steps: int, seed: int = 0,
                 bs: int = BS) -> list[list[list[int]]]:
    """A random third of the blocks per row and step (always the newest block, which holds
    the token being decoded)."""
    g = torch.Generator().manual_seed(seed)
    plans = []
    for t in range(steps):
        row = []
        for n0 in lengths:
            nb = num_blocks(n0 + t + 1, bs)
            pick = torch.randperm(nb, generator=g)[:max(1, nb // 3)].tolist()
            row.append(sorted(set(pick) | {nb - 1}))
        plans.append(row)
    return plans


def greedy(model: Any, ids: list[int], steps: int) -> tuple[list[int], list[torch.Tensor]]:
    """transformers' greedy ``generate``: the new tokens and the logits of each."""
    x = torch.tensor([ids], device=device_of(model))
    with torch.no_grad():
        out = model.generate(x, max_new_tokens=steps, min_new_tokens=steps, do_sample=False,
                             output_logits=True, return_dict_in_generate=True, pad_token_id=0)
    return out.sequences[0, len(ids):].tolist(), [lg[0].float().cpu() for lg in out.logits]


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> None:
    torch.testing.assert_close(a.float().cpu(), b.float().cpu(), atol=tol, rtol=0)


# -- (a) keep-all ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_keep_all_equals_plain_generate(name):
    model, lay = build(name), layout()
    toks, want = greedy(model, lay.input_ids, 6)
    dec = FastDecoder(model, batch_size=1, max_len=256, policy="full", config=CFG)
    got = dec.generate(IdsTokenizer(), [lay], max_new_tokens=6, keep_logits=True,
                       bound_sections=False)[0]
    assert got.generated_ids == toks
    assert len(dec.step_logits) == len(want)
    for a, b in zip(dec.step_logits, want):
        close(a[0], b)


# -- (b) a random keep-set per step, and the caches afterwards -------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_random_keep_sets_equal_the_dense_reference_and_so_do_the_caches(name):
    model, lay = build(name), layout()
    dec = FastDecoder(model, batch_size=1, max_len=256, policy=RandomPolicy(), config=CFG)
    got = dec.generate(IdsTokenizer(), [lay], max_new_tokens=8, keep_logits=True,
                       bound_sections=False)[0]
    blocks = got.blocks
    assert any(len(b) < num_blocks(lay.prompt_len + i + 1, BS) for i, b in enumerate(blocks))
    ids = lay.input_ids + got.generated_ids[:len(blocks)]
    want, cache = reference(model, ids, blocks, len(blocks))
    for a, b in zip(dec.step_logits, want):
        close(a[0], b)
    # every cache the step keeps equals transformers' after the same tokens
    n, step = len(ids), dec.step
    for spec in step.layers:
        i = spec.index
        if spec.kind == "linear":
            assert step.linear is not None
            layer = cache.layers[i]
            close(step.linear.conv[i][0], layer.conv_states[0][0])
            close(step.linear.recurrent[i][0], layer.recurrent_states[0][0])
            continue
        keys, values = cache.layers[i].keys[0], cache.layers[i].values[0]  # [Hk, m, d]
        if spec.kind == "global":
            close(step.k[i][0, :, :n], keys)
            close(step.v[i][0, :, :n], values)
        else:  # the ring holds the last W positions, position p at slot p % W
            m = min(keys.shape[1], spec.window)
            slots = torch.arange(n - m, n) % spec.window
            close(step.k[i][0, :, slots], keys[:, -m:])
            close(step.v[i][0, :, slots], values[:, -m:])
    # the same accounting as the reference engine: attended tokens over the global layers
    ref = generate(model, IdsTokenizer(), [lay], policy=RandomPolicy(), config=CFG,
                   max_new_tokens=8, min_new_tokens=8, bound_sections=False)[0]
    assert got.generated_ids == ref.generated_ids
    assert [s.read for s in got.steps] == [s.read for s in ref.steps]
    assert got.stats() == ref.stats() and got.costs == ref.costs


# -- (c) a batch of rows of different lengths ------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_a_batch_equals_its_rows_run_alone(name):
    model = build(name)
    full = layout().input_ids
    prompts = [full[:90], full[:53]]
    steps = 6
    g = torch.Generator().manual_seed(3)
    feed = torch.randint(4, 120, (2, steps), generator=g).tolist()
    plans = random_plans([len(p) for p in prompts], steps)
    dec = FastDecoder(model, batch_size=2, max_len=256, policy="dac", config=CFG)
    both = drive(dec, prompts, feed, plans)
    for r in range(2):
        one = drive(FastDecoder(model, batch_size=1, max_len=256, policy="dac", config=CFG),
                    [prompts[r]], [feed[r]], [[p[r]] for p in plans])
        for a, b in zip(both, one):
            close(a[r], b[0])


# -- (d) the sliding ring past the window ----------------------------------------------------
@pytest.mark.parametrize("name", SLIDING)
@pytest.mark.parametrize("prompt_len", [5, WINDOW, 40])
def test_the_ring_wraps_exactly(name, prompt_len):
    """Prompts shorter than, as long as and longer than the window, decoded across the
    ring's wrap, keep-all: transformers' own sliding cache."""
    model = build(name)
    assert CONFIGS[name]["sliding_window"] == WINDOW
    ids = layout().input_ids[:prompt_len]
    steps = WINDOW + 4
    toks, want = greedy(model, ids, steps)
    got = drive(FastDecoder(model, batch_size=1, max_len=128, policy="full", config=CFG),
                [ids], [toks[:-1]])
    assert len(got) == len(want)
    for a, b in zip(got, want):
        close(a[0], b)


def test_sliding_prefill_runs_in_chunks(monkeypatch):
    """A prompt of several prefill chunks (each reading back ``W - 1`` keys before it) equals
    one chunk."""
    from dac.engines.fast import ring

    model = build("gemma3_text")
    ids = layout().input_ids
    want = drive(FastDecoder(model, batch_size=1, max_len=256, config=CFG), [ids], [[5, 6]])
    monkeypatch.setattr(ring, "PREFILL_CHUNK", 7)
    monkeypatch.setattr(ring.window_prefill, "__defaults__", (7,))
    got = drive(FastDecoder(model, batch_size=1, max_len=256, config=CFG), [ids], [[5, 6]])
    for a, b in zip(got, want):
        close(a, b)


# -- (e) mode switches leave every cache untouched -------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_masks_change_reads_never_caches(name):
    """The same forced tokens under changing keep-sets and under keep-all: the same global
    K/V, rings and GDN states (the tiny models' only global layer is their last, so nothing
    downstream of a masked read is cached); and the prompt's entries are as prefill left
    them."""
    model = build(name)
    prompts = [layout().input_ids[:77]]
    feed = [torch.randint(4, 120, (10,), generator=torch.Generator().manual_seed(5)).tolist()]
    masked = FastDecoder(model, batch_size=1, max_len=256, policy="dac", config=CFG)
    masked.prefill(prompts)
    after_prefill = [t.clone() for t in masked.step.caches()]
    masked_logits = drive(masked, prompts, feed, random_plans([77], 10, seed=9))
    dense = FastDecoder(model, batch_size=1, max_len=256, policy="full", config=CFG)
    dense_logits = drive(dense, prompts, feed)
    assert any((a - b).abs().max() > 1e-3 for a, b in zip(masked_logits, dense_logits))
    got, want = masked.step.caches(), dense.step.caches()
    assert len(got) == len(want) > 0
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    for spec in masked.step.layers:  # the prompt's global K/V were never rewritten
        if spec.kind == "global":
            i = spec.index
            k0 = [t for t in after_prefill if t.shape == masked.step.k[i].shape][0]
            assert torch.equal(masked.step.k[i][:, :, :77], k0[:, :, :77])


# -- layout, accounting and refusals -----------------------------------------------------------
def test_gemma4_global_layers_get_their_own_cache_shape():
    step = FastDecoder(build("gemma4_text"), batch_size=2, max_len=200, config=CFG).step
    shapes = [None if k is None else tuple(k.shape) for k in step.k]
    # three sliding rings of 16 slots (head size 16), one global cache (head size 32)
    assert shapes == [(2, 2, 16, 16)] * 3 + [(2, 2, step.cache_len, 32)]
    assert step.global_ids == [3] and (step.hk, step.d) == (2, 32)


def test_qwen3_5_keeps_no_kv_for_its_linear_layers():
    step = FastDecoder(build("qwen3_5_text"), batch_size=2, max_len=200, config=CFG).step
    assert step.k[:3] == [None] * 3 and step.k[3] is not None
    assert step.linear is not None and sorted(step.linear.conv) == [0, 1, 2]
    assert step.linear.recurrent[0].shape == (2, 4, 8, 8)
    assert step.linear.recurrent[0].dtype == torch.float32


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("policy", ["streaming", "quest:budget=0.3"])
def test_policies_count_the_global_layers_like_the_reference_engine(name, policy):
    model, lay = build(name), layout()
    kw = dict(policy=policy, config=CFG, max_new_tokens=5)
    ref = generate(model, IdsTokenizer(), [lay], min_new_tokens=5, bound_sections=False, **kw)[0]
    got = FastDecoder(model, batch_size=1, max_len=256, policy=policy, config=CFG).generate(
        IdsTokenizer(), [lay], max_new_tokens=5, bound_sections=False)[0]
    assert got.generated_ids == ref.generated_ids
    assert [s.read for s in got.steps] == pytest.approx([s.read for s in ref.steps])
    assert got.fraction < 1.0
    assert got.stats().keys() == ref.stats().keys()
    assert got.stats()["local_bytes"] == ref.stats()["local_bytes"]


def test_fill_random_fills_rings_and_states():
    for name in ("gemma3_text", "qwen3_5_text"):
        dec = FastDecoder(build(name), batch_size=2, max_len=200, config=CFG)
        dec.fill_random([150, 120])
        assert all(t.abs().sum() > 0 for t in dec.step.caches())
        dec.lengths = [n + 1 for n in dec.lengths]
        dec.set_plan([[0, 1], [0, 2]])
        dec.set_tokens([5, 6])
        assert torch.isfinite(dec.run_step()).all()
