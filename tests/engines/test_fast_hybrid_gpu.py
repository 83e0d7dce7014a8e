"""The fast engine on hybrid models on a GPU: bf16, CUDA graph captured, against transformers'
own decoding (the HF reference: its decode loop, the global layers masked to the kept blocks).

The same checks as ``test_fast_hybrid`` (keep-all, random keep-sets, a batch of rows of
different lengths, the sliding ring across its wrap, caches untouched by the masks), with bf16
tolerances. Skipped without CUDA; times nothing.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
import torch

from dac.engines.fast import FastDecoder
from dac.planning.blocks import PlanConfig
from tests.engines.test_fast_hybrid import (NAMES, SLIDING, WINDOW, drive, greedy, layout,
                                            random_plans, reference)
from tests.helpers import IdsTokenizer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

#: bf16 logits of the tiny models are ~0.5 in size; one bf16 ulp there is 0.004, and 20 steps in
#: bf16 drift by up to ~0.02 from the reference (measured on a CPU)
TOL = 3e-2


#: the compiled kernel reads blocks of 16 tokens or more (the CPU tests' 8 are refused)
BS = 16
CFG = PlanConfig(block_size=BS, sink_tokens=16, window=16, local_window=32)

#: the compiled GPU kernels need head sizes of at least 16 per dot operand: the tiny CPU
#: configs' 16 is too small for FlexAttention's decode kernel, real models use 64-512
GPU_HEADS = {"head_dim": 64, "global_head_dim": 128}


@functools.lru_cache(maxsize=None)
def gpu_model(name: str) -> Any:
    from transformers import AutoConfig, AutoModelForCausalLM

    from tests.engines.test_hybrid import CONFIGS

    cfg = dict(CONFIGS[name], head_dim=GPU_HEADS["head_dim"])
    if "global_head_dim" in cfg:
        cfg["global_head_dim"] = GPU_HEADS["global_head_dim"]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(name, **cfg)).eval()
    return model.to("cuda", torch.bfloat16)


def decoder(model: Any, batch: int, policy: str = "dac") -> FastDecoder:
    dec = FastDecoder(model, batch_size=batch, max_len=256, policy=policy, config=CFG)
    assert dec.step.use_graph and dec.step._graph is not None  # the step is one CUDA graph
    return dec


def close(a: torch.Tensor, b: torch.Tensor, tol: float = TOL) -> None:
    torch.testing.assert_close(a.float().cpu(), b.float().cpu(), atol=tol, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_keep_all_equals_plain_generate(name):
    model = gpu_model(name)
    ids = layout().input_ids
    toks, want = greedy(model, ids, 8)
    got = drive(decoder(model, 1, "full"), [ids], [toks[:-1]])
    assert len(got) == len(want)
    for a, b in zip(got, want):
        close(a[0], b)


@pytest.mark.parametrize("name", NAMES)
def test_random_keep_sets_equal_the_reference(name):
    model = gpu_model(name)
    ids = layout().input_ids
    toks, _ = greedy(model, ids, 8)
    plans = random_plans([len(ids)], 7, seed=2, bs=BS)
    want, _ = reference(model, ids + toks[:7], [p[0] for p in plans], 7, bs=BS)
    got = drive(decoder(model, 1), [ids], [toks[:7]], plans)
    for a, b in zip(got, want):
        close(a[0], b)


@pytest.mark.parametrize("name", NAMES)
def test_a_batch_equals_the_reference_per_row(name):
    model = gpu_model(name)
    full = layout().input_ids
    prompts = [full[:90], full[:53]]
    feed = torch.randint(4, 120, (2, 6), generator=torch.Generator().manual_seed(3)).tolist()
    plans = random_plans([90, 53], 6, bs=BS)
    got = drive(decoder(model, 2), prompts, feed, plans)
    for r in range(2):
        want, _ = reference(model, prompts[r] + feed[r], [p[r] for p in plans], 6, bs=BS)
        for a, b in zip(got, want):
            close(a[r], b)


@pytest.mark.parametrize("name", SLIDING)
@pytest.mark.parametrize("prompt_len", [5, 40])
def test_the_ring_wraps_exactly(name, prompt_len):
    model = gpu_model(name)
    ids = layout().input_ids[:prompt_len]
    toks, want = greedy(model, ids, WINDOW + 4)
    got = drive(decoder(model, 1, "full"), [ids], [toks[:-1]])
    for a, b in zip(got, want):
        close(a[0], b)


@pytest.mark.parametrize("name", NAMES)
def test_masks_change_reads_never_caches(name):
    """Global K/V, rings and GDN states after masked steps equal those after keep-all steps
    on the same tokens, bit for bit (the tiny models' only global layer is their last)."""
    model = gpu_model(name)
    prompts = [layout().input_ids[:77]]
    feed = [torch.randint(4, 120, (10,), generator=torch.Generator().manual_seed(5)).tolist()]
    masked = decoder(model, 1)
    drive(masked, prompts, feed, random_plans([77], 10, seed=9, bs=BS))
    dense = decoder(model, 1, "full")
    drive(dense, prompts, feed)
    got, want = masked.step.caches(), dense.step.caches()
    assert len(got) == len(want) > 0
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_quest_runs_in_the_graph_and_counts_the_global_layers(name):
    model = gpu_model(name)
    dec = decoder(model, 1, "quest:budget=0.3")
    res = dec.generate(IdsTokenizer(), [layout()], max_new_tokens=6, keep_logits=True,
                       bound_sections=False)[0]
    assert all(torch.isfinite(x).all() for x in dec.step_logits)
    assert len(res.steps) == 5 and all(0 < s.read < s.length for s in res.steps)
