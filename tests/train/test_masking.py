"""The training mask is exactly what DAC decoding reads: same logits, token for token."""

from __future__ import annotations

from dataclasses import dataclass, replace
import re

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from dac.engines.hf import generate
from dac.models import tiny_model, train_tokenizer
from dac.planning.blocks import PlanConfig, plan_dac
from dac.protocol.context import build_prompt
from dac.protocol.grammar import Directive, Mode, parse_directive
from dac.protocol.prompt import SYSTEM_PROMPT
from dac.tasks import make_sample
from dac.train.data import collate, directive_close, directive_span, make_example
from dac.train.masking import (
    ATTN_IMPLEMENTATION, AnswerMask, dense_mask, directive_schedule, register,
    row_mask, schedule_mask, use_mask)
from dac.train.targets import hop_target, led_target, stepwise_target
from dac.train.tokenizer import protocol_tokens

from ..helpers import ForceText

CFG = PlanConfig(block_size=16, sink_tokens=16, keep_preamble=False, window=16, local_window=48)


@dataclass
class FakeSample:
    """What :func:`make_example` and the answer formats read of a sample."""

    sections: list[str]
    question: str
    directive: Directive
    target: str
    lead: str = ""
    hops: tuple[tuple[int, str], ...] = ()
    scan_last: bool = False
    hop_keys: tuple[str, ...] = ()

    @property
    def answer_text(self) -> str:
        return self.target[len(self.directive.render()):].strip()


@pytest.fixture(scope="module")
def tok():
    text = SYSTEM_PROMPT + " the river runs past the old mill and the harbour 0123456789 " * 20
    return train_tokenizer([text] * 4, vocab_size=400, extra_tokens=protocol_tokens(12))


def _sample(d: str, answer: str = " 4821 7730 river") -> FakeSample:
    secs = [f"the river {i} runs past the old mill " * (3 + i % 3) for i in range(1, 9)]
    directive = parse_directive(d[2:-2])
    return FakeSample(secs, "Which number follows the mill?", directive, d + answer)


def test_directive_close_is_the_token_that_writes_the_brackets(tok):
    for text in ["[[focus S3]] 12", "[[focus S2, S5-S7]] 12", "[[global]] x", "[[local]] 7"]:
        k = directive_close(tok, text)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids[: k + 1]).endswith("]]")
        assert not tok.decode(ids[:k]).endswith("]]")
    assert directive_close(tok, "no directive") == -1


def test_answer_rows_follow_the_planner(tok):
    s = _sample("[[focus S2, S6]]")
    ex = make_example(s, tok, CFG, dense=False)
    lay = build_prompt(tok, s.sections, s.question)
    close = lay.prompt_len + directive_close(tok, s.target)
    assert ex.mask.start == close
    for i, row in enumerate(ex.mask.rows):
        assert row == plan_dac(s.directive, lay, close + i + 1, CFG)
    m = dense_mask([ex.mask], len(ex.ids), CFG.block_size)[0, 0]
    # prompt and directive rows are causal; an answer row drops most of the document
    assert torch.equal(m[: close], torch.ones(close, len(ex.ids), dtype=torch.bool).tril()[: close])
    assert m[close].sum() < (close + 1) // 2
    assert make_example(s, tok, CFG, dense=True).mask.start == -1
    glob = _sample("[[global]]")
    assert make_example(glob, tok, CFG, dense=False).mask.start == -1


def test_question_first_examples_ask_before_the_document_and_mask_the_same_sections(tok):
    """``question_first``: the training prompt is ``build_prompt(question_first=True)``'s, and
    the answer rows keep the same sections (shifted by the longer preamble) as without it."""
    s = _sample("[[focus S3]]")
    plain = make_example(s, tok, CFG, dense=False)
    ex = make_example(s, tok, CFG, dense=False, question_first=True)
    lay = build_prompt(tok, s.sections, s.question, question_first=True)
    assert ex.ids[:ex.prompt_len] == lay.input_ids and ex.prompt_len > plain.prompt_len
    assert ex.ids[ex.prompt_len:] == plain.ids[plain.prompt_len:]
    close = lay.prompt_len + directive_close(tok, s.target)
    assert ex.mask.start == close
    for i, row in enumerate(ex.mask.rows):
        assert row == plan_dac(s.directive, lay, close + i + 1, CFG)


def test_a_led_target_is_trained_whole_and_masked_from_the_directive_on(tok):
    """``lead=True`` trains ``led_target``: the lead is part of the answer, under the mask."""
    s = _sample("[[focus S3]]", " 4821")
    led = replace(s, lead="the mill runs past ")
    assert led_target(led) == "[[focus S3]] the mill runs past 4821"
    ex = make_example(led, tok, CFG, dense=False, lead=True)
    lay = build_prompt(tok, s.sections, s.question)
    assert tok.decode(ex.ids[ex.prompt_len:]).startswith(led_target(led))
    assert ex.mask.start == lay.prompt_len + directive_close(tok, led_target(led))
    assert len(ex.mask.rows) == len(ex.ids) - 1 - ex.mask.start  # every answer row, EOS too
    plain = make_example(s, tok, CFG, dense=False)
    assert len(plain.ids) < len(ex.ids) and plain.mask.start == ex.mask.start


def test_a_lead_first_target_weights_only_the_directive_and_masks_after_it(tok):
    """``lead_first``: the lead is written before the directive, under full attention (no
    directive yet); only the directive's tokens carry the directive weight, and the answer
    after it is trained under the directive's mask."""
    s = _sample("[[focus S3]]", " 4821")
    text = "the mill runs past [[focus S3]] 4821"
    led = replace(s, lead="the mill runs past ")
    ex = make_example(led, tok, CFG, dense=False, lead=True, lead_first=True)
    lay = build_prompt(tok, s.sections, s.question)
    target = tok.decode(ex.ids[ex.prompt_len:])
    assert target.startswith(text)
    first, close = directive_span(tok, text)
    assert 0 < first <= close and ex.head_from == first and ex.head == close + 1
    assert tok.decode(ex.ids[ex.prompt_len + first: ex.prompt_len + close + 1]).strip() == \
        "[[focus S3]]"
    assert ex.mask.start == lay.prompt_len + close
    for i, row in enumerate(ex.mask.rows):
        assert row == plan_dac(s.directive, lay, ex.mask.start + i + 1, CFG)
    batch = collate([ex], len(ex.ids) + 3, tok.pad_token_id)
    flagged = batch.directive[0].nonzero().flatten().tolist()
    # position p predicts token p + 1: the flags sit on the positions predicting the directive
    assert flagged == list(range(ex.prompt_len - 1 + first, ex.prompt_len + close))
    # without lead_first the same sample trains led_target, its directive first
    plain = make_example(led, tok, CFG, dense=False, lead=True)
    assert plain.head_from == 0 and tok.decode(plain.ids[plain.prompt_len:]).startswith(
        "[[focus S3]] the mill runs past 4821")


def test_a_lead_read_locally_then_a_global_step_then_the_focus(tok):
    """``lead_directive``: the lead is trained under the local declaration before it, the step
    after ``[[global]]`` reads everything, the value is trained under the focus; only the
    focus token carries the directive weight."""
    s = _sample("[[focus S3]]", " 4821")
    text = "[[local]] the mill runs past [[global]][[focus S3]] 4821"
    led = replace(s, lead="the mill runs past ")
    ex = make_example(led, tok, CFG, dense=False, lead=True, lead_first=True,
                      lead_directive="[[local]]")
    lay = build_prompt(tok, s.sections, s.question)
    target = ex.ids[ex.prompt_len:-1]
    assert tok.decode(target) == text
    sched = directive_schedule(tok, target, lay.num_sections)
    (i_loc, loc), (i_glob, _), (i_foc, foc) = sched
    assert loc.mode is Mode.LOCAL and foc == s.directive
    assert ex.mask.start == lay.prompt_len + i_loc
    for r, row in enumerate(ex.mask.rows):
        q = ex.mask.start + r
        i = q - lay.prompt_len
        d = loc if i < i_glob else Directive(Mode.GLOBAL) if i < i_foc else foc
        assert row == plan_dac(d, lay, q + 1, CFG)
    assert i_foc == i_glob + 1  # one step reads the whole context
    assert ex.mask.rows[i_glob - i_loc] == list(range(len(ex.mask.rows[i_glob - i_loc])))
    assert (ex.head_from, ex.head) == (i_foc, i_foc + 1)  # the focus token alone


def test_a_stepwise_answer_weights_every_focus_and_masks_each_step_under_its_own(tok):
    """``per_hop``: one focus per step, each later one after a global step; every focus token
    is weighted as a directive, each step is trained under its own focus, the step after
    ``[[global]]`` reads everything. Samples without such a target keep theirs."""
    s = _sample("[[focus S2, S5]]", " 4821, 7730")
    text = "[[focus S2]] 4821, [[global]][[focus S5]] 7730"
    ex = make_example(replace(s, hops=((2, "4821"), (5, "7730"))), tok, CFG, dense=False,
                      per_hop=True)
    lay = build_prompt(tok, s.sections, s.question)
    target = ex.ids[ex.prompt_len:-1]
    assert tok.decode(target) == text
    (i_a, a), (i_glob, _), (i_b, b) = directive_schedule(tok, target, lay.num_sections)
    assert (a.sections(), b.sections()) == ([2], [5]) and i_b == i_glob + 1
    assert [(ex.head_from, ex.head), *ex.more_heads] == [(i_a, i_a + 1), (i_b, i_b + 1)]
    for r, row in enumerate(ex.mask.rows):
        q = ex.mask.start + r
        i = q - lay.prompt_len
        d = a if i < i_glob else Directive(Mode.GLOBAL) if i < i_b else b
        assert row == plan_dac(d, lay, q + 1, CFG)
    batch = collate([ex], len(ex.ids), tok.pad_token_id)
    flagged = batch.directive[0].nonzero().flatten().tolist()
    assert flagged == [ex.prompt_len - 1 + i_a, ex.prompt_len - 1 + i_b]
    plain = make_example(s, tok, CFG, dense=False, per_hop=True)  # no hops: no stepwise text
    assert tok.decode(plain.ids[plain.prompt_len:-1]) == s.target and not plain.more_heads


def test_a_scan_target_is_trained_step_by_step_under_each_section(tok):
    """``scan``: world_state's stepwise answer with its backward scan; every focus weighted,
    each step's rows under its own section, only the scan's first step after a global one."""
    s = make_sample("world_state", tok, 1024, 3, sections=12)
    text = stepwise_target(s, scan=True)
    assert text.count("[[global]]") == 1 and "none" in text  # this seed's move is not in S12
    ex = make_example(s, tok, CFG, dense=False, per_hop=True, scan=True)
    lay = build_prompt(tok, s.sections, s.question)
    target = ex.ids[ex.prompt_len:-1]
    assert tok.decode(target) == text
    sched = directive_schedule(tok, target, lay.num_sections)
    focuses = [(i, d) for i, d in sched if d.mode is Mode.FOCUS]
    assert [d.sections()[0] for _, d in focuses] == [
        int(k) for k in re.findall(r"focus S(\d+)", text)]
    assert [(ex.head_from, ex.head), *ex.more_heads] == [(i, i + 1) for i, _ in focuses]
    for r, row in enumerate(ex.mask.rows):
        q = ex.mask.start + r
        i = q - lay.prompt_len
        d = [d for j, d in sched if j <= i][-1]
        assert row == plan_dac(d, lay, q + 1, CFG)
    plain = make_example(s, tok, CFG, dense=False, per_hop=True)
    assert tok.decode(plain.ids[plain.prompt_len:-1]) == hop_target(s)


def test_a_keyed_stepwise_target_reads_its_first_key_locally_then_one_global_step(tok):
    """``hop_keys``: world_state's object under ``[[local]]``, one global step, the holder's
    focus; the holder's move key under that focus, one global step, the room's focus. Every
    focus weighted; each row planned as the decode reads it."""
    s = make_sample("world_state", tok, 1024, 3, sections=12)
    text = stepwise_target(s, keys="all", lead_directive="[[local]]")
    ex = make_example(s, tok, CFG, dense=False, per_hop=True, lead_directive="[[local]]",
                      hop_keys="all")
    lay = build_prompt(tok, s.sections, s.question)
    target = ex.ids[ex.prompt_len:-1]
    assert tok.decode(target) == text
    sched = directive_schedule(tok, target, lay.num_sections)
    assert [d.mode for _, d in sched] == [Mode.LOCAL, Mode.GLOBAL, Mode.FOCUS, Mode.GLOBAL,
                                         Mode.FOCUS]
    (_, _), (i_g1, _), (i_f1, _), (i_g2, _), (i_f2, _) = sched
    assert i_f1 == i_g1 + 1 and i_f2 == i_g2 + 1  # one step reads the whole context
    assert [(ex.head_from, ex.head), *ex.more_heads] == [(i_f1, i_f1 + 1), (i_f2, i_f2 + 1)]
    for r, row in enumerate(ex.mask.rows):
        q = ex.mask.start + r
        i = q - lay.prompt_len
        d = [d for j, d in sched if j <= i][-1]
        assert row == plan_dac(d, lay, q + 1, CFG)
    first = make_example(s, tok, CFG, dense=False, per_hop=True, lead_directive="[[local]]",
                         hop_keys="first")
    assert tok.decode(first.ids[first.prompt_len:-1]) == stepwise_target(s, keys="first")


def test_batched_mask_equals_rows_built_one_by_one(tok):
    exs = [make_example(_sample(d), tok, CFG, dense=dense)
           for d, dense in [("[[focus S3]]", False), ("[[local]]", False), ("[[global]]", False),
                            ("[[focus S1, S4]]", True), ("[[focus S8]]", False)]]
    width = max(len(e.ids) for e in exs) + 5
    got = dense_mask([e.mask for e in exs], width, CFG.block_size)
    assert got.shape == (len(exs), 1, width, width)
    for b, e in enumerate(exs):
        want = torch.ones(width, width, dtype=torch.bool).tril()
        for i, blocks in enumerate(e.mask.rows):
            allowed = torch.zeros(width, dtype=torch.bool)
            for j in blocks:
                allowed[j * CFG.block_size:(j + 1) * CFG.block_size] = True
            want[e.mask.start + i] &= allowed
        assert torch.equal(got[b, 0], want)


def test_row_mask_equals_dense_mask_in_values_and_gradients(tok):
    """The fast form (causal SDPA, answer rows recomputed) is the dense reference, exactly."""
    exs = [make_example(_sample(d), tok, CFG, dense=dense)
           for d, dense in [("[[focus S3]]", False), ("[[global]]", False), ("[[local]]", False),
                            ("[[focus S2, S5-S6]]", False), ("[[focus S8]]", True)]]
    width = max(len(e.ids) for e in exs) + 7
    batch = collate(exs, width, tok.pad_token_id)
    fast = row_mask(batch.masks, width, CFG.block_size)
    assert int(fast.answer.sum()) == sum(len(e.mask.rows) for e in exs) and fast.any_rows
    for b, e in enumerate(exs):  # the answer rows, exactly
        want = set(range(e.mask.start, e.mask.start + len(e.mask.rows))) if e.mask.rows else set()
        assert set(fast.answer[b].nonzero()[:, 0].tolist()) == want
    plain = row_mask([AnswerMask(-1, [])] * 2, width, CFG.block_size)
    assert not plain.any_rows and not plain.answer.any()
    model = tiny_model("llama", vocab_size=len(tok), head_dim=16, seed=5)
    register()
    model.set_attn_implementation(ATTN_IMPLEMENTATION)
    out = {}
    try:
        for name, mask in [("dense", dense_mask(batch.masks, width, CFG.block_size)),
                           ("rows", fast)]:
            model.zero_grad()
            with use_mask(model, mask):
                logits = model(batch.ids).logits
            sel = batch.targets != -100
            torch.nn.functional.cross_entropy(logits[sel], batch.targets[sel]).backward()
            out[name] = (logits.detach(), [p.grad.clone() for p in model.parameters()])
    finally:
        model.set_attn_implementation("sdpa")
    torch.testing.assert_close(out["rows"][0], out["dense"][0], atol=1e-5, rtol=1e-5)
    for g_rows, g_dense in zip(out["rows"][1], out["dense"][1]):
        torch.testing.assert_close(g_rows, g_dense, atol=1e-5, rtol=1e-4)


class Record(LogitsProcessor):
    def __init__(self):
        self.scores: list[torch.Tensor] = []

    def __call__(self, input_ids, scores):
        self.scores.append(scores.clone())
        return scores


#: targets that declare several times: a local lead-in, then global, then the focus; a focus
#: revised mid-answer; a malformed declaration (parsed as at inference: back to global); one
#: focus per step (``per_hop``)
SEVERAL = ["[[local]] the mill runs past [[global]] [[focus S3]] 4821 7730",
           "[[focus S2]] 4821 [[local]] 7730 river",
           "[[focus S6]] 4821 [[zoom]] 7730 river",
           "[[focus S2]] 4821, [[global]][[focus S5]] 7730"]


@pytest.mark.parametrize("directive", ["[[focus S3]]", "[[focus S2, S5-S6]]", "[[local]]",
                                       *SEVERAL])
def test_training_logits_equal_dac_decode_logits(tok, directive):
    """Teacher-forced training forward under the answer mask == DAC generation, step by step;
    with several declarations in the target, every row follows the one in force there."""
    if directive in SEVERAL:
        base = _sample("[[focus S3]]")
        s = FakeSample(base.sections, base.question, base.directive, directive)
    else:
        s = _sample(directive)
    ex = make_example(s, tok, CFG, dense=False)
    model = tiny_model("llama", vocab_size=len(tok), head_dim=16, seed=3)
    lay = build_prompt(tok, s.sections, s.question)
    target = ex.ids[lay.prompt_len:]
    rec = Record()
    procs = LogitsProcessorList([rec, ForceText([target], lay.prompt_len)])
    # raw logits: the section bound would set S9-S12 (past this 8-section prompt) to -inf
    generate(model, tok, [lay], policy="dac", config=CFG, max_new_tokens=len(target),
             logits_processor=procs, bound_sections=False)
    decoded = torch.stack([x[0] for x in rec.scores])  # [T, V], step t predicts target[t]

    register()
    model.set_attn_implementation(ATTN_IMPLEMENTATION)
    batch = collate([ex], len(ex.ids), tok.pad_token_id)
    try:
        with torch.no_grad():
            mask = dense_mask(batch.masks, len(ex.ids), CFG.block_size)
            with use_mask(model, mask):
                train_logits = model(batch.ids).logits[0]
            with use_mask(model, row_mask(batch.masks, len(ex.ids), CFG.block_size)):
                fast_logits = model(batch.ids).logits[0]
            with use_mask(model, dense_mask([AnswerMask(-1, [])], len(ex.ids), CFG.block_size)):
                full_logits = model(batch.ids).logits[0]
    finally:
        model.set_attn_implementation("sdpa")
    n = len(decoded)
    pos = slice(lay.prompt_len - 1, lay.prompt_len - 1 + n)
    torch.testing.assert_close(train_logits[pos], decoded, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(fast_logits[pos], decoded, atol=2e-4, rtol=1e-4)
    # the mask matters: full attention differs on the answer tokens
    first_masked = ex.mask.start - (lay.prompt_len - 1)
    assert not torch.allclose(full_logits[pos][first_masked:], decoded[first_masked:], atol=1e-3)


def test_a_schedule_follows_each_declaration_and_falls_back_like_the_parser(tok):
    s = _sample("[[focus S3]]")
    lay = build_prompt(tok, s.sections, s.question)
    text = "[[local]] the mill [[global]] [[focus S3]] 4821 [[focus S99]] 7"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    sched = directive_schedule(tok, ids, lay.num_sections)
    assert [d.render() for _, d in sched] == ["[[local]]", "[[global]]", "[[focus S3]]",
                                                "[[global]]"]  # S99 does not exist: global
    for i, _ in sched:
        assert tok.decode(ids[: i + 1]).endswith("]]") and not tok.decode(ids[:i]).endswith("]]")
    m = schedule_mask(sched, lay, lay.prompt_len, lay.prompt_len + len(ids), CFG)
    assert m.start == lay.prompt_len + sched[0][0]
    for r, row in enumerate(m.rows):
        q = m.start + r
        current = [d for i, d in sched if lay.prompt_len + i <= q][-1]
        assert row == plan_dac(current, lay, q + 1, CFG)
    g = tok("[[global]] 1 [[global]] 2", add_special_tokens=False)["input_ids"]
    assert schedule_mask(directive_schedule(tok, g, 8), lay, 0, 50, CFG).start == -1
    assert directive_schedule(tok, tok("no directive", add_special_tokens=False)["input_ids"],
                              8) == []


def test_no_declaration_is_dense(tok):
    s = _sample("[[focus S1]]")
    lay = build_prompt(tok, s.sections, s.question)
    assert schedule_mask([], lay, 5, 10, CFG).start == -1
    assert schedule_mask([(0, Directive(Mode.FOCUS, ((1, 1),)))], lay, 5, 8, CFG).rows
