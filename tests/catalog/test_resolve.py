"""``--model`` resolution: directories, catalog names, .gguf files and hub ids."""

from __future__ import annotations

import json

import pytest

from dac.catalog import fetch as fetch_mod
from dac.cli import main
from dac.models import ModelLoadError, load, resolve_model, tiny_model, tiny_tokenizer


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DAC_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def save_tiny(path, protocol="da"):
    tok = tiny_tokenizer()
    tiny_model("llama", vocab_size=len(tok), max_positions=4096, seed=1).save_pretrained(path)
    tok.save_pretrained(path)
    (path / "dac_config.json").write_text(json.dumps({"protocol": protocol}))
    return path


def test_a_local_directory_is_itself(tmp_path, cache):
    assert resolve_model(tmp_path) == tmp_path
    assert resolve_model(str(tmp_path)) == tmp_path


def test_a_catalog_name_not_fetched_says_how_to_get_it(cache):
    with pytest.raises(ModelLoadError, match="dac models get smollm2-135m-instruct"):
        resolve_model("smollm2-135m-instruct")
    with pytest.raises(ModelLoadError, match="dac models get qwen2.5-coder-0.5b-instruct"):
        load("qwen2.5-coder-0.5b-instruct")


def test_a_fetched_catalog_name_works_in_dac_generate(cache, tmp_path, capsys):
    d = save_tiny(cache / "models" / "smollm2-135m-instruct")
    assert resolve_model("smollm2-135m-instruct") == d
    doc = tmp_path / "doc.txt"
    doc.write_text("The river is called Tamble. " * 20)
    rc = main(["generate", "--model", "smollm2-135m-instruct", "--context", str(doc),
               "--question", "Which river?", "--json", "--max-new-tokens", "3",
               "--chunk-tokens", "64", "--block-size", "16"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["protocol"] == "da"


def test_generate_on_a_catalog_name_not_fetched_is_one_line(cache, tmp_path, capsys):
    doc = tmp_path / "doc.txt"
    doc.write_text("text")
    rc = main(["generate", "--model", "gemma3-270m", "--context", str(doc), "--question", "q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "not fetched yet: run `dac models get gemma3-270m`" in err[0]


def test_missing_paths_and_other_files(cache, tmp_path):
    with pytest.raises(ModelLoadError, match="model directory not found"):
        resolve_model("/nonexistent/model")
    with pytest.raises(ModelLoadError, match="model directory not found"):
        resolve_model(tmp_path / "missing")
    f = tmp_path / "weights.bin"
    f.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="is a file"):
        resolve_model(f)


def test_a_gguf_file_is_converted_once_into_the_cache(cache, tmp_path, monkeypatch):
    gguf = tmp_path / "my-model.Q4_0.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 5000)
    calls = []

    def converter(src, out, *, progress=print):
        calls.append(src)
        save_tiny(out)

    monkeypatch.setattr(fetch_mod, "convert_gguf", converter)
    d = resolve_model(gguf)
    assert d.parent == cache / "gguf" and d.name.startswith("my-model.Q4_0-")
    assert fetch_mod.is_ready(d) and calls == [gguf]
    assert resolve_model(str(gguf)) == d and len(calls) == 1  # cached
    model, tok = load(gguf)
    assert model.config.model_type == "llama"
    gguf.write_bytes(b"GGUF" + b"\1" * 5000)  # new weights at that path: a new conversion
    assert resolve_model(gguf) != d and len(calls) == 2


def test_a_failed_gguf_conversion_leaves_nothing(cache, tmp_path, monkeypatch):
    gguf = tmp_path / "broken.gguf"
    gguf.write_bytes(b"not a gguf")

    def converter(src, out, *, progress=print):
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        raise fetch_mod.FetchError("cannot convert broken.gguf: bad magic")

    monkeypatch.setattr(fetch_mod, "convert_gguf", converter)
    with pytest.raises(ModelLoadError, match="cannot convert broken.gguf"):
        resolve_model(gguf)
    assert list((cache / "gguf").iterdir()) == []


def test_a_hub_id_fails_in_one_line_when_the_hub_is_unreachable(cache, monkeypatch, tmp_path):
    import huggingface_hub

    monkeypatch.chdir(tmp_path)

    def unreachable(repo_id, **kw):
        raise huggingface_hub.errors.LocalEntryNotFoundError(
            "An error happened while trying to locate the files on the Hub. Got: ConnectError")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    with pytest.raises(ModelLoadError) as e:
        resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    msg = str(e.value)
    assert "\n" not in msg and "hub is unreachable" in msg
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in msg


def test_a_hub_id_found_by_the_hub_is_its_snapshot(cache, monkeypatch, tmp_path):
    import huggingface_hub

    monkeypatch.chdir(tmp_path)
    snap = save_tiny(tmp_path / "snapshot")
    seen = []

    def download(repo_id, **kw):
        seen.append(kw.get("local_files_only", False))
        if kw.get("local_files_only"):
            raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")
        return str(snap)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", download)
    assert resolve_model("org/tiny") == snap
    assert seen == [True, False]  # the local hub cache first, then the network


def test_a_relative_path_under_an_existing_folder_is_no_hub_id(cache, monkeypatch, tmp_path):
    import huggingface_hub

    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda *a, **k: pytest.fail("the hub was asked"))
    with pytest.raises(ModelLoadError, match="model directory not found: runs/typo"):
        resolve_model("runs/typo")
