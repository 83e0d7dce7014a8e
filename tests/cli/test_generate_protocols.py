"""`dac generate --protocol da|brackets|vanilla --json` on a tiny random model whose tokenizer
carries a tool-calling chat template (the project's Qwen-3-shaped fixture)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dac.cli import main
from dac.models import tiny_model, tiny_tokenizer

TEMPLATES = Path(__file__).parents[1] / "protocol" / "templates"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tool-model")
    tok = tiny_tokenizer()
    tok.chat_template = (TEMPLATES / "qwen3.jinja").read_text()
    tiny_model("llama", vocab_size=len(tok), max_positions=8192, seed=1).save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture
def context(tmp_path):
    f = tmp_path / "doc.txt"
    f.write_text("\n\n".join(f"Paragraph {i}: the river and the mountain. " * 3
                             for i in range(8)))
    return f


@pytest.mark.parametrize("protocol", ["da", "brackets", "vanilla"])
def test_generate_json_under_each_protocol(model_dir, context, capsys, protocol):
    rc = main(["generate", "--model", str(model_dir), "--context", str(context),
               "--question", "Which river?", "--protocol", protocol, "--json",
               "--max-new-tokens", "6", "--chunk-tokens", "128", "--block-size", "16"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["protocol"] == protocol
    st = out["stats"]
    assert set(st) >= {"attended_tokens", "decode_steps", "per_step_ratio", "mode_steps",
                       "focus_attempts", "focus_success", "terminated"}
    assert st["decode_steps"] == out["kv"]["decode_steps"] and st["attended_tokens"] > 0
    assert isinstance(out["timeline"], list) and isinstance(out["answer"], str)
    if protocol == "da":
        assert out["delivery"] == "tools" and out["sections"] > 3  # 128-token magic chunks
    if protocol == "vanilla":
        assert out["timeline"] == []


def test_da_is_the_default_for_a_model_that_names_no_protocol(model_dir, context, capsys):
    assert main(["generate", "--model", str(model_dir), "--context", str(context),
                 "--question", "Which river?", "--json", "--max-new-tokens", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["protocol"] == "da"


def test_sampling_options(model_dir, context, capsys):
    args = ["generate", "--model", str(model_dir), "--context", str(context), "--question",
            "Which river?", "--json", "--max-new-tokens", "6", "--protocol", "brackets"]
    assert main(args + ["--temperature", "1.5", "--seed", "3"]) == 0
    a = json.loads(capsys.readouterr().out)
    assert main(args + ["--temperature", "1.5", "--seed", "3"]) == 0
    b = json.loads(capsys.readouterr().out)
    assert a["sampling"] == {"do_sample": True, "temperature": 1.5, "seed": 3}
    assert a["text"] == b["text"]
    assert main(args + ["--top-p", "2"]) == 2
    assert "top_p" in capsys.readouterr().err
