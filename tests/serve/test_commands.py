"""``dac serve`` argument handling and the middleware's option merging (no server)."""

from __future__ import annotations

import pytest

from dac.cli import main
from dac.engines.vllm.options import DACOptionError, parse_options
from dac.protocol import build_prompt
from dac.protocol.constraint import banned_token_ids
from dac.serve.middleware import bound_sections, merge_options


def test_serve_refuses_bad_arguments(tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path / "missing")]) == 2
    assert "model directory not found" in capsys.readouterr().err
    (tmp_path / "config.json").write_text("{}")
    assert main(["serve", "--model", str(tmp_path), "--", "--enable-prefix-caching"]) == 2
    assert "cannot be combined with DAC" in capsys.readouterr().err
    assert main(["serve", "--model", str(tmp_path), "--block-size", "0"]) == 2


def test_vllm_argv_forces_dac_settings(tmp_path):
    from argparse import Namespace

    from dac.serve.commands import vllm_argv

    (tmp_path / "config.json").write_text("{}")
    args = Namespace(model=str(tmp_path), host="127.0.0.1", port=8001, block_size=64,
                     max_model_len=None, dtype="auto", gpu_memory_utilization=None,
                     served_model_name=None, vllm_args=["--", "--max-num-seqs", "4"])
    argv = vllm_argv(args)
    for flag in ("--no-enable-prefix-caching", "--no-async-scheduling", "--enforce-eager"):
        assert flag in argv
    assert argv[argv.index("--middleware") + 1] == "dac.serve.middleware.DACMiddleware"
    assert argv[-2:] == ["--max-num-seqs", "4"]


def test_merge_options():
    assert merge_options({"dac": {"window": 8, "dac_sink_tokens": 0}}) == \
        {"dac": 1, "dac_window": 8, "dac_sink_tokens": 0}
    assert merge_options({"dac": False, "vllm_xargs": {"x": 1}}) == {"x": 1, "dac": 0}
    with pytest.raises(DACOptionError):
        merge_options({"vllm_xargs": [1]})


def test_middleware_bounds_sections(protocol_tokenizer, tokenizer):
    """allowed_token_ids = vocabulary minus the directive tokens of missing sections; the count
    from dac_sections, else from the markers of the prompt or messages."""
    tok, vocab = protocol_tokenizer, 500
    lay = build_prompt(tok, [f"the river {i} runs past the mill" for i in range(8)], "Which?")
    banned = banned_token_ids(tok, 8)
    assert banned

    def allowed(data, **xargs):
        opts = parse_options({"dac": 1, **xargs})
        got = bound_sections(data, opts, tok, vocab)
        return None if got is None else set(range(vocab)) - set(got)

    assert allowed({"prompt": lay.text}) == banned
    assert allowed({"prompt": lay.input_ids}) == banned
    assert allowed({"prompt": [lay.text, "Document:\n[S1] a\n\nQuestion: b"]}) == banned
    assert allowed({"messages": [{"role": "system", "content": "see [S1], [S2]"},
                                 {"role": "user", "content": lay.text}]}) == banned
    assert allowed({"prompt": "no markers"}, dac_sections=[0, 4, 4, 9]) == \
        banned_token_ids(tok, 2)
    assert allowed({"prompt": "no markers"}) is None  # nothing known: the parser's fallback
    assert allowed({"prompt": lay.text}, dac_bound_sections=0) is None
    assert allowed({"prompt": lay.text}, dac_policy="full") is None
    assert allowed({"prompt": lay.text}, dac_policy="streaming") is None
    mine = [3, 4, next(iter(banned))]
    opts = parse_options({"dac": 1})
    assert bound_sections({"prompt": lay.text, "allowed_token_ids": mine}, opts, tok, vocab) \
        == [3, 4]
    assert bound_sections({"prompt": lay.text, "allowed_token_ids": ["x"]}, opts, tok,
                          vocab) is None  # malformed: left for vLLM to refuse
    # a tokenizer that spells directives as text: nothing to bound
    assert bound_sections({"prompt": lay.text}, opts, tokenizer, vocab) is None


def test_a_model_without_a_chat_template_gets_the_plain_one(tmp_path, protocol_tokenizer):
    """Chat requests to a model with no template of its own are rendered as dac's prompts
    are without one (the ids equal build_prompt's), so chat completions work on dac-tiny."""
    from argparse import Namespace

    from dac.protocol.prompt import SYSTEM_PROMPT
    from dac.serve.commands import PLAIN_TEMPLATE, chat_template, vllm_argv

    from transformers import AutoTokenizer

    protocol_tokenizer.save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)  # a copy: the fixture stays template-free
    (tmp_path / "config.json").write_text("{}")
    assert chat_template(tmp_path, None) == str(PLAIN_TEMPLATE)
    args = Namespace(model=str(tmp_path), host="127.0.0.1", port=8001, block_size=64,
                     max_model_len=None, dtype="auto", gpu_memory_utilization=None,
                     served_model_name=None, chat_template=None, dac_by_default=True,
                     vllm_args=[])
    argv = vllm_argv(args)
    assert argv[argv.index("--chat-template") + 1] == str(PLAIN_TEMPLATE)
    lay = build_prompt(tok, ["the river runs", "the mill turns"], "Which?")
    user = lay.text[len(SYSTEM_PROMPT) + 2:-len("\nAnswer:")]
    tok.chat_template = PLAIN_TEMPLATE.read_text()
    text = tok.apply_chat_template([{"role": "system", "content": SYSTEM_PROMPT},
                                    {"role": "user", "content": user}], tokenize=False,
                                   add_generation_prompt=True)
    assert tok(text, add_special_tokens=False)["input_ids"] == lay.input_ids
    tok.save_pretrained(tmp_path)  # now the model has a template: none is passed
    assert chat_template(tmp_path, None) is None
    with pytest.raises(FileNotFoundError):
        chat_template(tmp_path, str(tmp_path / "missing.jinja"))


def test_with_defaults_fills_only_what_the_request_left_out():
    from dac.serve.middleware import with_defaults

    plan = {"block_size": 64, "window": 64, "keep_preamble": False}
    got = with_defaults({"dac": 1, "dac_window": 8}, plan, 32)
    assert got == {"dac": 1, "dac_window": 8, "dac_block_size": 64, "dac_keep_preamble": 0}
    assert "dac_block_size" not in with_defaults({}, {"block_size": 48}, 32)  # 32 does not divide
    assert with_defaults({"dac": 1}, {}, 32) == {"dac": 1}
