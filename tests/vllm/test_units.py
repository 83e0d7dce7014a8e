"""Pieces of the vLLM integration that need no engine: options, compaction, layout, replay."""

from __future__ import annotations

import pytest
import torch

from dac.engines.hf.generate import generate
from dac.engines.vllm.compaction import compact_rows, compacted_length, kernel_blocks
from dac.engines.vllm.layout import layout_from_markers
from dac.engines.vllm.options import (
    DACOptionError,
    is_dac_request,
    parse_options,
    to_extra_args,
)
from dac.engines.vllm.tracker import replay
from dac.models import tiny_model
from dac.planning import StreamingPolicy, get_policy
from dac.planning.blocks import PlanConfig, plan_dac
from dac.protocol.context import build_prompt
from dac.protocol.grammar import Directive, Mode
from tests.helpers import forcing

CFG = PlanConfig(block_size=32, sink_tokens=32, window=32, local_window=64)


def layout(tok, n=6):
    secs = [f"The river {i} runs past the mountain and the city {i} has a harbour." * 2
            for i in range(n)]
    return build_prompt(tok, secs, "What is the value?")


def test_options_round_trip(tokenizer):
    lay = layout(tokenizer)
    extra = to_extra_args(lay, CFG, "dac")
    assert all(isinstance(v, (int, str, list)) for v in extra.values())  # vllm_xargs types
    opts = parse_options(extra, kernel_block_size=32)
    assert opts.config == CFG and opts.policy.name == "dac"
    back = opts.layout(lay.input_ids)
    assert (back.sections, back.preamble, back.protected) == \
        (lay.sections, lay.preamble, lay.protected)


def test_options_defaults_and_detection():
    assert not is_dac_request(None) and not is_dac_request({"force_token_ids": [1]})
    assert is_dac_request({"dac": "true"}) and is_dac_request({"dac_window": 5})
    assert not is_dac_request({"dac": 0, "dac_window": 5})
    assert parse_options({"dac": 1}, kernel_block_size=128).config.block_size == 128


@pytest.mark.parametrize("extra,msg", [
    ({"dac": "maybe"}, "0/1 or true/false"),
    ({"dac_window": 1.5}, "integer"),
    ({"dac_window": True}, "integer"),
    ({"dac_policy": "oracle"}, "query-aware"),
    ({"dac_policy": 3}, "string"),
    ({"dac_block_size": 96}, "multiple"),
    ({"dac_sections": [0, 4, 2, 8]}, "overlap"),
    ({"dac_sections": "0,4"}, "flat list"),
    ({"dac_preamble": [0, 4]}, "need dac_sections"),
    ({"dac_sink_tokens": -1}, "sink_tokens"),
    ({"dac_foo": 1}, "unknown DAC option"),
])
def test_options_errors(extra, msg):
    with pytest.raises(DACOptionError, match=msg):
        parse_options(extra, kernel_block_size=64)


@pytest.mark.parametrize("spec, msg", [
    ("oracle", "dac_policy 'oracle' is query-aware (per-head block scores)"),
    ("quest:budget=0.2", "dac_policy 'quest' is query-aware (per-head block scores); "
     "the vLLM engine supports dac, full and streaming"),
    ("streaming+safety", "dac_policy 'streaming+safety' needs each step's logits; "
     "the vLLM engine supports dac, full and streaming"),
])
def test_policy_refusals_name_the_policy(spec, msg):
    with pytest.raises(DACOptionError) as info:
        parse_options({"dac": 1, "dac_policy": spec})
    assert str(info.value).startswith(msg)


@pytest.mark.parametrize("policy", ["full", "streaming:window=512", StreamingPolicy(window=96)])
def test_policy_spec_travels(tokenizer, policy):
    extra = to_extra_args(layout(tokenizer), CFG, policy)
    opts = parse_options(extra, kernel_block_size=32)
    assert opts.policy == get_policy(policy) and extra["dac_policy"] == opts.policy.spec()
    with pytest.raises(DACOptionError, match="policy 'quest' is query-aware"):
        to_extra_args(layout(tokenizer), CFG, "quest")


def test_bound_sections_option(tokenizer):
    from dac.engines.vllm.options import bounded_allowed_ids

    extra = to_extra_args(layout(tokenizer), CFG, "dac")
    assert extra["dac_bound_sections"] == 1 and parse_options(extra).bound_sections
    assert to_extra_args(layout(tokenizer), CFG, "dac", bound_sections=False)[
        "dac_bound_sections"] == 0
    assert parse_options({"dac": 1}).bound_sections
    assert not parse_options({"dac_bound_sections": "off"}).bound_sections
    with pytest.raises(DACOptionError, match="dac_bound_sections"):
        parse_options({"dac_bound_sections": 2})
    assert bounded_allowed_ids(frozenset({1, 3}), 5) == [0, 2, 4]
    assert bounded_allowed_ids(frozenset(), 5) is None
    assert bounded_allowed_ids(frozenset({1, 3}), 5, [3, 4]) == [4]
    assert bounded_allowed_ids(frozenset({1, 3}), 5, [3]) is None  # vLLM refuses an empty list


def test_spans_beyond_prompt_rejected():
    opts = parse_options({"dac_sections": [0, 50]})
    with pytest.raises(DACOptionError, match="beyond the prompt"):
        opts.layout(list(range(20)))


def test_kernel_blocks_and_length():
    # DAC blocks of 64 over kernel blocks of 32: block j -> kernel blocks 2j, 2j+1 (clipped)
    assert kernel_blocks([0, 3], 200, 64, 32) == [0, 1, 6]
    assert compacted_length([0, 1, 6], 200, 32) == 2 * 32 + 8
    with pytest.raises(ValueError):
        kernel_blocks([0], 10, 48, 32)
    with pytest.raises(ValueError, match="tail"):
        compacted_length([0, 1], 200, 32)


def test_compacted_table_reads_exactly_the_kept_tokens():
    """Walk the compacted table like a paged kernel: it must visit the kept tokens in order."""
    B, length = 32, 200
    table = torch.tensor([[7, 3, 9, 1, 4, 8, 2, 0]], dtype=torch.int32)
    seq = torch.tensor([length], dtype=torch.int32)
    kept = kernel_blocks(plan_dac(Directive(Mode.LOCAL, window=40), _plain(length), length,
                                  PlanConfig(block_size=32, sink_tokens=32, window=32,
                                             keep_preamble=False)),
                         length, 32, B)
    bt, sl, _ = compact_rows(table, seq, {0: kept}, B)
    assert table.tolist() == [[7, 3, 9, 1, 4, 8, 2, 0]] and seq.tolist() == [length]  # untouched
    n = int(sl[0])
    # physical slot read at compacted index i, versus the logical tokens kept
    phys = [int(bt[0, i // B]) * B + i % B for i in range(n)]
    want = [int(table[0, p // B]) * B + p % B for b in kept
            for p in range(b * B, min((b + 1) * B, length))]
    assert phys == want and n < length


def _plain(n):
    from dac.protocol.context import PromptLayout

    return PromptLayout.plain(n)


def test_layout_from_markers_matches_build_prompt(tokenizer):
    lay = layout(tokenizer, 9)
    got = layout_from_markers(tokenizer, lay.input_ids)
    assert (got.sections, got.preamble, got.protected) == \
        (lay.sections, lay.preamble, lay.protected)
    with pytest.raises(DACOptionError, match="no section markers"):
        layout_from_markers(tokenizer, tokenizer("just text")["input_ids"])


def test_layout_from_markers_reads_a_question_first_prompt(tokenizer):
    """A prompt that asks before the document too (a ``question_first`` model's) is found the
    same: sections after ``Document:``, the protected tail from the last question."""
    from dac.protocol.context import build_prompt

    secs = [f"Section {i} says the river is {i * 7} miles long." for i in range(1, 7)]
    lay = build_prompt(tokenizer, secs, "How long is the river in [S3]?", question_first=True)
    got = layout_from_markers(tokenizer, lay.input_ids)
    assert (got.sections, got.preamble, got.protected) == \
        (lay.sections, lay.preamble, lay.protected)


def test_replay_equals_hf_session(tokenizer):
    """The front end's replay reports what the HF engine's session recorded."""
    model = tiny_model("llama", vocab_size=len(tokenizer), seed=2)
    lay = layout(tokenizer, 8)
    text = "[[focus S3]] the river [[local]] 1 2 [[global]] x"
    res = generate(model, tokenizer, [lay], policy="dac", config=CFG, max_new_tokens=24,
                   **forcing(tokenizer, [text], [lay]))[0]
    opts = parse_options(to_extra_args(lay, CFG))
    tr, out_text = replay(opts, lay, tokenizer, res.generated_ids, {2})
    assert out_text == res.text
    assert [(s.step, s.length, s.read) for s in tr.steps] == \
        [(s.step, s.length, s.read) for s in res.steps]
    assert tr.blocks == res.blocks
    assert [e.kind for e in tr.parser.events] == [e.kind for e in res.events]


def test_unsupported_configurations_are_named():
    from types import SimpleNamespace as NS

    from dac.engines.vllm.support import unsupported_reasons

    class Mode:
        def __init__(self, full):
            self.full = full

        def has_full_cudagraphs(self):
            return self.full

    def config(**kw):
        base = dict(speculative_config=None, scheduler_config=NS(async_scheduling=False),
                    cache_config=NS(enable_prefix_caching=False),
                    model_config=NS(get_sliding_window=lambda: None, enforce_eager=False,
                                    hf_text_config=NS(layer_types=["full_attention"] * 2)),
                    compilation_config=NS(cudagraph_mode=Mode(False)))
        base.update(kw)
        return NS(**base)

    assert unsupported_reasons(config()) == []
    assert unsupported_reasons(config(model_config=NS(
        get_sliding_window=lambda: 64, enforce_eager=True,
        hf_text_config=NS(layer_types=["sliding_attention", "full_attention"])))) == []
    cases = {
        "speculative": config(speculative_config=object()),
        "async scheduling": config(scheduler_config=NS(async_scheduling=True)),
        "prefix caching": config(cache_config=NS(enable_prefix_caching=True)),
        "sliding-window": config(model_config=NS(get_sliding_window=lambda: 128,
                                                 enforce_eager=True, hf_text_config=NS())),
        # hybrids are served (the full-attention group only is compacted: test_hybrid_vllm.py);
        # a model without any full-attention layer is not
        "no full-attention layer": config(model_config=NS(
            get_sliding_window=lambda: 64, enforce_eager=True,
            hf_text_config=NS(layer_types=["sliding_attention", "sliding_attention"]))),
        "full CUDA graphs": config(compilation_config=NS(cudagraph_mode=Mode(True))),
    }
    for word, cfg in cases.items():
        reasons = unsupported_reasons(cfg)
        assert len(reasons) == 1 and word in reasons[0], (word, reasons)
