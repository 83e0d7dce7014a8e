"""The paper's protocol through the vLLM plugin: a scripted DA response reads, at every decode
step, the blocks the paper's rules give (the same check as the HF and fast engines')."""

from __future__ import annotations

import pytest

from dac.planning import PlanConfig
from dac.protocol.base import get_protocol
from tests.engines.test_da_scripted import DOC, SCRIPT, check
from tests.vllm.vllm_reference import BLOCK

pytestmark = pytest.mark.vllm


def test_scripted_da_response_reads_the_papers_blocks(engine, hf):
    model, tok = hf
    lay = get_protocol("da").build_prompt(tok, DOC, "What is the mill's number?")
    assert lay.delivery == "inline"  # the tiny tokenizer has no chat template
    ids = tok(SCRIPT, add_special_tokens=False)["input_ids"]
    (res,) = engine.generate([lay], policy="dac", config=PlanConfig(block_size=BLOCK),
                             max_new_tokens=len(ids), extra_args={"force_token_ids": ids},
                             ignore_eos=True)
    assert res.generated_ids[:len(ids)] == ids and res.protocol == "da"
    check(res, lay, tok, ids, BLOCK)
