"""`dac generate --policy dac --json` end to end on tiny random hybrids (Gemma-3, Gemma-4,
Qwen-3.5, gpt-oss): attended tokens count the global layers, and the other layers' fixed
per-step read is reported beside them."""

from __future__ import annotations

import json

import pytest
from transformers import AutoConfig, AutoModelForCausalLM

from dac.cli import main
from dac.models import tiny_tokenizer
from tests.engines.test_hybrid import REFERENCE_CONFIGS


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.mark.parametrize("name", list(REFERENCE_CONFIGS))
@pytest.mark.parametrize("policy", ["dac", "full", "streaming", "quest"])
def test_generate_json_on_a_hybrid(name, policy, tok, tmp_path, capsys):
    d = tmp_path / name
    cfg = AutoConfig.for_model(name, **{**REFERENCE_CONFIGS[name], "vocab_size": len(tok),
                                        "max_position_embeddings": 2048})
    AutoModelForCausalLM.from_config(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    doc = tmp_path / "doc.txt"
    doc.write_text("\n\n".join(f"Paragraph {i}: the river and the mountain. " * 3
                               for i in range(6)))
    assert main(["generate", "--model", str(d), "--context", str(doc), "--question",
                 "Which river?", "--policy", policy, "--protocol", "brackets", "--json",
                 "--max-new-tokens", "6", "--block-size", "16"]) == 0
    out = json.loads(capsys.readouterr().out)
    st = out["stats"]
    assert st["decode_steps"] >= 1 and 0 < st["attended_tokens"] <= st["full_tokens"]
    if policy == "full":
        assert st["per_step_ratio"] == 1.0
    # one global layer of 2 KV heads x 16 dims (Gemma-4's global layers: 32) in bf16
    per_token = 2 * 2 * (32 if name == "gemma4_text" else 16) * 2
    assert st["global_kv_bytes"] == round(st["attended_tokens"] * per_token)
    assert st["local_bytes"] > 0  # sliding windows or linear-attention state, per step
