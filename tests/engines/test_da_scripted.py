"""The paper's protocol end to end: a scripted DA response forced through each engine reads,
at every decode step, exactly the blocks the paper's rules give.

The rules, computed here from the text alone (not from the planner): a mode switches on the
``>`` that closes an opening ``<focus ...>`` or ``<local>`` tag and returns to global on the
closing tag; focus keeps the 16-token sink, the question to the end of the prompt, the
response so far and the named chunks; local keeps all of that but the chunks; global keeps
everything; spans are rounded outward to whole blocks.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dac.engines.fast import FastDecoder
from dac.engines.hf import generate
from dac.models import tiny_model, tiny_tokenizer
from dac.planning import PlanConfig
from dac.protocol.base import get_protocol
from tests.helpers import ForceText, forcing

BS = 16
CFG = PlanConfig(block_size=BS)
TEMPLATES = Path(__file__).parents[1] / "protocol" / "templates"
SCRIPT = ('<global>the river is long</global><focus magic_chunks="2">the mill number 4711'
          '</focus><local>so the number is 4711</local><answer>4711</answer>')
DOC = [f"Chunk text {i}: the river {i} runs past the mill, whose number is {4700 + i}. " * 3
       for i in range(6)]


@pytest.fixture(scope="module", params=["qwen3", "gemma4", None])
def setup(request):
    tok = tiny_tokenizer()
    if request.param:
        tok.chat_template = (TEMPLATES / f"{request.param}.jinja").read_text()
    model = tiny_model("llama", vocab_size=len(tok), max_positions=8192, seed=2)
    lay = get_protocol("da").build_prompt(tok, DOC, "What is the mill's number?")
    return model, tok, lay


def modes(tok, ids: list[int]) -> list[str]:  # noqa: D401
    """The mode in force at the step that processes each generated token (paper's rules)."""
    out = []
    for t in range(len(ids)):
        text = tok.decode(ids[:t + 1])
        tags = re.findall(r"<(/?)(focus|local)\b[^>]*>", text)
        mode = "global"
        for close, name in tags:
            mode = "global" if close else name
        out.append(mode)
    return out


def expected(lay, mode: str, length: int, bs: int = BS) -> list[int]:
    BS = bs  # noqa: N806 - the rule at any block size
    nb = -(-length // BS)
    if mode == "global":
        return list(range(nb))
    spans = [(0, 16), (lay.prompt_len, length)] + [(p.start, p.end) for p in lay.protected]
    if mode == "focus":
        spans.append((lay.sections[1].start, lay.sections[1].end))
    keep = {nb - 1}
    for a, b in spans:
        keep.update(range(a // BS, -(-min(b, length) // BS)))
    return sorted(keep)


def check(res, lay, tok, ids, bs=BS):
    want_modes = modes(tok, ids)
    assert {"focus", "local", "global"} <= set(want_modes)
    assert len(res.steps) == len(ids) - 1
    for i, (st, kept) in enumerate(zip(res.steps, res.blocks)):
        assert st.step == i and st.mode == want_modes[i]
        assert kept == expected(lay, want_modes[i], st.length, bs), (i, want_modes[i])
    kinds = [(e.kind, e.applied.mode.value) for e in res.events]
    assert kinds == [("directive", "focus"), ("directive", "global"), ("directive", "local"),
                     ("directive", "global")]
    assert res.answer == "4711" and res.stats()["focus_success"] == 1


def test_reference_engine(setup):
    model, tok, lay = setup
    ids = tok(SCRIPT, add_special_tokens=False)["input_ids"]
    res = generate(model, tok, [lay], policy="dac", config=CFG, max_new_tokens=len(ids),
                   min_new_tokens=len(ids), **forcing(tok, [SCRIPT], [lay]))[0]
    assert res.generated_ids[:len(ids)] == ids
    check(res, lay, tok, ids)
    assert res.fraction < 1.0  # focus and local leave chunks unread


def test_fast_engine(setup):
    model, tok, lay = setup
    ids = tok(SCRIPT, add_special_tokens=False)["input_ids"]
    dec = FastDecoder(model, batch_size=1, max_len=lay.prompt_len + len(ids) + 8, config=CFG)
    res = dec.generate(tok, [lay], max_new_tokens=len(ids),
                       logits_processor=ForceText([ids], lay.prompt_len))[0]
    assert res.generated_ids[:len(ids)] == ids
    check(res, lay, tok, ids)


def test_keep_all_equals_full_attention(setup):
    model, tok, lay = setup
    ids = tok(SCRIPT, add_special_tokens=False)["input_ids"]
    kw = dict(config=CFG, max_new_tokens=len(ids), min_new_tokens=len(ids),
              **forcing(tok, [SCRIPT], [lay]))
    full = generate(model, tok, [lay], policy="full", **kw)[0]
    assert full.fraction == 1.0 and all(b == list(range(-(-s.length // BS)))
                                         for b, s in zip(full.blocks, full.steps))
    assert full.answer == "4711"
