import json

import pytest

from dac.cli import main
from dac.models import tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    d = tmp_path_factory.mktemp("model")
    tiny_model("llama", vocab_size=len(tokenizer), max_positions=2048).save_pretrained(d)
    tokenizer.save_pretrained(d)
    (d / "dac_config.json").write_text(json.dumps({"protocol": "brackets",
                                                   "plan": {"block_size": 32, "window": 64}}))
    return d


@pytest.fixture
def context(tmp_path):
    f = tmp_path / "doc.txt"
    f.write_text("\n\n".join(f"Paragraph {i}: the river and the mountain. " * 4 for i in range(12)))
    return f


def one_error_line(capsys, rc):
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("dac: error: "), err
    return err[0]


def test_generate_json_schema(model_dir, context, capsys):
    rc = main(["generate", "--model", str(model_dir), "--context", str(context),
               "--question", "Which river?", "--json", "--max-new-tokens", "4",
               "--section-chars", "200"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["schema"] == "dac.generation/1"
    assert set(out) >= {"answer", "text", "timeline", "kv", "policy", "sections", "block_size"}
    assert out["block_size"] == 32  # from the model's dac_config.json
    assert set(out["kv"]) == {"read", "full", "fraction", "decode_steps"}
    assert 0 < out["kv"]["fraction"] <= 1


def test_generate_builds_the_prompt_the_model_was_trained_with(model_dir, context, capsys,
                                                                tmp_path):
    """A model whose ``dac_config.json`` says ``prompt.question_first`` is asked the question
    before the document too: the same run's prompt is longer by one question."""
    import shutil

    from dac.models import load_prompt_options

    qf = tmp_path / "qf"
    shutil.copytree(model_dir, qf)
    meta = json.loads((qf / "dac_config.json").read_text())
    (qf / "dac_config.json").write_text(json.dumps({**meta, "prompt": {"question_first": True}}))
    assert load_prompt_options(qf) == {"question_first": True}
    assert load_prompt_options(model_dir) == {}
    lens = []
    for d in (model_dir, qf):
        assert main(["generate", "--model", str(d), "--context", str(context),
                     "--question", "Which river?", "--json", "--max-new-tokens", "2",
                     "--section-chars", "200"]) == 0
        lens.append(json.loads(capsys.readouterr().out)["prompt_tokens"])
    assert lens[1] > lens[0]


def test_generate_human_output(model_dir, context, capsys):
    rc = main(["generate", "--model", str(model_dir), "--context", str(context),
               "--question", "Which river?", "--max-new-tokens", "3", "--policy", "streaming",
               "--block-size", "16"])
    assert rc == 0
    assert "KV read:" in capsys.readouterr().out


@pytest.mark.parametrize("args, needle", [
    (["--model", "/nonexistent/model"], "model directory not found"),
    (["--question", "   "], "question is empty"),
    (["--policy", "bogus"], "unknown policy"),
    (["--policy", "quest:budget=7"], "out of range"),
    (["--block-size", "0"], "block_size must be positive"),
    (["--context", "/nonexistent.txt"], "context file not found"),
    (["--max-new-tokens", "0"], "max-new-tokens"),
])
def test_generate_bad_input_is_one_line(model_dir, context, capsys, args, needle):
    base = {"--model": str(model_dir), "--context": str(context), "--question": "Which river?"}
    flat = []
    given = dict(zip(args[::2], args[1::2]))
    for k, v in {**base, **given}.items():
        flat += [k, v]
    line = one_error_line(capsys, main(["generate", *flat]))
    assert needle in line


def test_context_longer_than_the_model_allows(model_dir, tmp_path, capsys):
    f = tmp_path / "long.txt"
    f.write_text("\n\n".join("word " * 200 for _ in range(40)))
    line = one_error_line(capsys, main(["generate", "--model", str(model_dir), "--context", str(f),
                                        "--question", "q?"]))
    assert "exceeds the model's limit" in line


def test_not_a_model_dir(tmp_path, context, capsys):
    line = one_error_line(capsys, main(["generate", "--model", str(tmp_path), "--context",
                                        str(context), "--question", "q?"]))
    assert "config.json" in line


def test_no_bound_sections_reaches_generate(model_dir, context, capsys, monkeypatch):
    import dac.engines.hf as hf

    seen = []
    real = hf.generate

    def recording(*a, **kw):
        seen.append(kw["bound_sections"])
        return real(*a, **kw)

    monkeypatch.setattr(hf, "generate", recording)
    base = ["generate", "--model", str(model_dir), "--context", str(context), "--question",
            "Which river?", "--max-new-tokens", "2", "--json"]
    assert main(base) == 0 and main(base + ["--no-bound-sections"]) == 0
    assert seen == [True, False]
    capsys.readouterr()


def test_eval_has_the_off_switch():
    from dac.cli import build_parser

    common = ["--model", "m", "--out", "o"]
    assert build_parser().parse_args(["eval", *common]).bound_sections is True
    assert build_parser().parse_args(["eval", *common, "--no-bound-sections"]).bound_sections \
        is False


def test_bad_arguments_exit_nonzero(capsys):
    with pytest.raises(SystemExit) as e:
        main(["generate", "--nope"])
    assert e.value.code == 2
    assert main([]) == 2


def test_demo_runs_end_to_end(tmp_path, capsys):
    rc = main(["demo", "--length", "512", "--out", str(tmp_path), "--json"])
    assert rc == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    # no loader or writer progress bars of transformers in the output (the spinner draws on
    # a terminal only)
    assert "it/s" not in captured.err and "Loading" not in captured.err
    assert set(out["runs"]) == {"dac", "full"}
    assert (tmp_path / "demo.json").is_file()
    assert (tmp_path / "timeline.png").stat().st_size > 1000
    for rec in out["runs"].values():
        assert rec["kv"]["per_step"] and 0 < rec["kv"]["fraction"] <= 1


def test_readme_snippet_gives_the_cli_answer(model_dir, context, capsys):
    """The README's Python snippet runs with the model's own plan (dac_config.json), so it
    answers as `dac generate` does."""
    from dac.engines.hf import generate
    from dac.models import load
    from dac.protocol import build_prompt, split_sections

    rc = main(["generate", "--model", str(model_dir), "--context", str(context),
               "--question", "Which river?", "--json", "--max-new-tokens", "6"])
    assert rc == 0
    cli = json.loads(capsys.readouterr().out)
    model, tok = load(model_dir)
    layout = build_prompt(tok, split_sections(context.read_text()), "Which river?")
    result = generate(model, tok, [layout], policy="dac", max_new_tokens=6)[0]
    assert result.answer == cli["answer"]
    assert round(result.fraction, 6) == cli["kv"]["fraction"]
    last = result.steps[-1].length
    assert result.blocks[-1][-1] == (last - 1) // 32  # the tail block in the model's 32-token blocks


@pytest.mark.parametrize("device, needle", [("cuda", "sees no CUDA GPU"), ("gpu9", "unknown device")])
def test_unavailable_device_is_one_line(model_dir, context, capsys, device, needle):
    import torch

    if torch.cuda.is_available() and device == "cuda":
        pytest.skip("this machine has a GPU")
    rc = main(["generate", "--model", str(model_dir), "--context", str(context),
               "--question", "Which river?", "--device", device])
    assert needle in one_error_line(capsys, rc)


def test_missing_optional_dependency_is_one_line(model_dir, context, capsys, monkeypatch):
    import dac.commands

    def boom(*a, **k):
        raise ModuleNotFoundError("No module named 'vllm'", name="vllm")

    monkeypatch.setattr("dac.engines.hf.generate", boom)
    rc = main(["generate", "--model", str(model_dir), "--context", str(context),
               "--question", "Which river?"])
    assert "missing optional dependency 'vllm'" in one_error_line(capsys, rc)
    assert dac.commands  # the command module itself imported fine
