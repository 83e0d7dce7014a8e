"""DA traces and the LoRA tuning loop (dac.train.da_traces, dac.train.lora), on tiny models."""

from __future__ import annotations

import json

import pytest
import torch

from dac.planning.blocks import PlanConfig, span_blocks
from dac.protocol.base import get_protocol
from dac.tasks import make_sample
from dac.train.da_traces import da_response, make_trace
from dac.train.lora import chunk_token_mask, lr_at, train


@pytest.fixture(scope="module")
def tok():
    from dac.models import tiny_tokenizer

    return tiny_tokenizer(1024)


def test_a_retrieval_response_focuses_on_the_needle_chunk_then_answers_in_local(tok):
    s = make_sample("niah_reworded", tok, 1024, 3)
    (section, _, _), = s.evidence
    assert da_response(s) == (f'<focus magic_chunks="{section}">{s.answers[0]}</focus>'
                               f'<local><answer>{s.answers[0]}</answer></local>')


def test_a_multi_hop_response_focuses_once_per_hop_in_answer_order(tok):
    s = make_sample("variable_tracking", tok, 1024, 3)
    text = da_response(s)
    for k, value in s.hops:
        assert f'<focus magic_chunks="{k}">{value}</focus>' in text
    assert text.count("<focus") == len(s.hops)
    assert text.endswith(f"<local><answer>{s.answer_text}</answer></local>")


def test_a_global_task_has_no_trace(tok):
    s = make_sample("common_words", tok, 1024, 0)
    with pytest.raises(ValueError, match="focus tasks only"):
        da_response(s)


def test_the_trace_is_trained_under_the_blocks_inference_keeps(tok):
    s = make_sample("niah_reworded", tok, 1024, 5)
    tr = make_trace(s, tok)
    proto = get_protocol("da")
    layout = proto.build_prompt(tok, list(s.sections), s.question)
    assert tr.input_ids[:tr.response_start] == list(layout.input_ids)
    assert tr.input_ids[-1] == tok.eos_token_id
    # rows start at the token that closes <focus ...> and run to the end of the response
    assert tr.response_start < tr.mask.start
    assert tr.mask.start + len(tr.mask.rows) == len(tr.input_ids)
    cfg = proto.plan_config(PlanConfig())
    (section, _, _), = s.evidence
    chunk = layout.sections[section - 1]
    needle = set(span_blocks(chunk.start, chunk.end, layout.prompt_len, cfg.block_size))
    scaffold = set(span_blocks(0, cfg.sink_tokens, layout.prompt_len, cfg.block_size))
    for sp in layout.protected:  # the question and the instruction, read in every mode
        scaffold |= set(span_blocks(sp.start, sp.end, layout.prompt_len, cfg.block_size))
    others = {b for k, sp in enumerate(layout.sections, 1) if k != section
              for b in span_blocks(sp.start, sp.end, layout.prompt_len, cfg.block_size)}
    others -= needle | scaffold
    assert others
    first = set(tr.mask.rows[0])
    assert needle <= first  # the focus step reads its chunk
    assert not (others & first)  # and no other chunk


def test_chunk_tokens_are_the_ones_naming_the_chunk(tok):
    s = make_sample("niah_reworded", tok, 1024, 5)
    tr = make_trace(s, tok)
    resp = da_response(s)
    marks = chunk_token_mask(tok, tr, resp)
    assert len(marks) == tr.response_len and any(marks) and not marks[-1]
    enc = tok(resp, add_special_tokens=False, return_offsets_mapping=True)
    named = "".join(resp[a:b] for (a, b), m in zip(enc["offset_mapping"], marks) if m)
    (section, _, _), = s.evidence
    assert str(section) in named and "focus" not in named


def test_the_schedule_warms_up_then_decays_to_a_tenth():
    assert lr_at(0, 100, 1.0) == pytest.approx(1 / 20)
    assert lr_at(19, 100, 1.0) == pytest.approx(1.0)
    assert lr_at(100, 100, 1.0) == pytest.approx(0.1)


def test_held_out_tasks_are_refused_for_training(tmp_path):
    with pytest.raises(ValueError, match="held out"):
        train(tmp_path / "none", tmp_path / "out", tasks="niah_reworded,niah_heldout")


@pytest.mark.slow
def test_tuning_writes_an_adapter_and_a_merged_model_that_differs_from_the_base(tmp_path, tok):
    from transformers import AutoModelForCausalLM

    from dac.models import tiny_model

    base = tmp_path / "base"
    model = tiny_model("qwen2", vocab_size=len(tok), max_positions=8192)
    model.save_pretrained(base)
    tok.save_pretrained(base)
    summary = train(base, tmp_path / "out", tasks="niah_reworded", lengths=[1024], examples=2,
                    accum=1, workers=0, lr=1e-2, say=lambda *_: None)
    adapter = tmp_path / "out" / "adapter"
    assert (adapter / "adapter_model.safetensors").stat().st_size == summary["adapter_bytes"]
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 8
    merged = tmp_path / "out" / "merged"
    assert json.loads((merged / "dac_config.json").read_text())["protocol"] == "da"
    m = AutoModelForCausalLM.from_pretrained(merged)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert not torch.allclose(m(ids).logits, model(ids).logits, atol=1e-4)


def test_the_turn_ends_with_the_template_s_end_of_turn_not_the_eos_name():
    from pathlib import Path

    from dac.models import tiny_tokenizer
    from dac.train.da_traces import end_of_turn

    t = tiny_tokenizer(1024)
    t.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>",
                                                        "<|endoftext|>"]})
    t.eos_token = "<|endoftext|>"  # what a GGUF conversion may declare
    assert end_of_turn(t) == t.convert_tokens_to_ids("<|endoftext|>")  # no template: EOS
    t.chat_template = (Path(__file__).parents[1] / "protocol" / "templates"
                       / "qwen3.jinja").read_text()
    assert end_of_turn(t) == t.convert_tokens_to_ids("<|im_end|>")
