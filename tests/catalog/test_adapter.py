"""``dac models get dac-qwen-0.5b``: a fetched base with the package's LoRA adapter merged in.

Everything is tiny and offline: a random Qwen2 model saved as the fetched base in a temporary
cache, and a random LoRA adapter made with peft standing in for the shipped one
(``dac.catalog.adapter.ADAPTER_ROOT`` points at it).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from dac.catalog import adapter as adapter_mod
from dac.catalog.entries import ADAPTERS, CATALOG
from dac.catalog.fetch import FetchError, fetch, fetch_adapted, is_ready
from dac.cli import main
from tests.helpers import leftovers, one_line
from dac.models import ModelLoadError, load, resolve_model

pytest.importorskip("peft")

NAME = "dac-qwen-0.5b"
BASE = "qwen2.5-coder-0.5b-instruct"
BASE_SHA = "b" * 64
IDS = torch.tensor([[1, 5, 9, 17, 33, 65, 100, 3]])


def tiny_qwen2(vocab_size: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0,
                         tie_word_embeddings=False)
    return Qwen2ForCausalLM(config).eval()


def auto(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


@pytest.fixture
def setup(tmp_path, monkeypatch, tokenizer):
    """The base fetched (ready) in a temporary cache; a random adapter where the package's is."""
    from peft import LoraConfig, get_peft_model

    cache = tmp_path / "cache"
    monkeypatch.setenv("DAC_CACHE", str(cache))
    root = cache / "models"
    base = root / BASE
    tiny_qwen2(len(tokenizer)).save_pretrained(base)
    tokenizer.save_pretrained(base)
    (base / "dac_config.json").write_text(json.dumps(
        {"protocol": "da", "plan": {"block_size": 16},
         "source": {"catalog": BASE, "sha256": BASE_SHA, "dtype": "float32"}}))
    assert is_ready(base)
    assets = tmp_path / "assets"
    folder = assets / ADAPTERS[NAME].adapter
    torch.manual_seed(1)
    peft_model = get_peft_model(auto(base), LoraConfig(
        r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(folder)
    (folder / "README.md").write_text("# dac-qwen-0.5b\n\nthe model card\n")
    monkeypatch.setattr(adapter_mod, "ADAPTER_ROOT", assets)
    return {"root": root, "base": base, "adapter": folder}


def test_the_entry_names_a_catalog_base_and_the_packaged_folder():
    entry = ADAPTERS[NAME]
    assert entry.base in CATALOG and NAME not in CATALOG and entry.protocol == "da"
    assert adapter_mod.adapter_dir(entry.adapter).name == NAME
    assert adapter_mod.adapter_dir(entry.adapter).parent.name == "assets"


def test_the_merged_model_computes_what_the_adapted_model_does(setup, capsys):
    from peft import PeftModel

    assert main(["models", "get", NAME]) == 0
    out, err = capsys.readouterr()
    path = Path(out.strip())
    assert path == setup["root"] / NAME and is_ready(path)
    assert "is already fetched" in err  # the base: fetched at once
    merged = logits(auto(path))
    adapted = logits(PeftModel.from_pretrained(auto(setup["base"]), setup["adapter"]).eval())
    base = logits(auto(setup["base"]))
    assert torch.allclose(merged, adapted, atol=1e-5)
    assert (merged - base).abs().max() > 1e-3  # the adapter changed something
    assert not any(path.glob("adapter_*"))  # a plain model: no peft needed to load it


def test_the_model_dir_records_both_hashes_and_resolves_by_name(setup, capsys, monkeypatch):
    with pytest.raises(ModelLoadError, match=f"not fetched yet: run `dac models get {NAME}`"):
        resolve_model(NAME)
    path = fetch(NAME, progress=lambda m: None)
    cfg = json.loads((path / "dac_config.json").read_text())
    weights = (setup["adapter"] / "adapter_model.safetensors").read_bytes()
    assert cfg["protocol"] == "da" and cfg["plan"] == {"block_size": 16}  # the base's, kept
    assert cfg["source"] == {"catalog": NAME, "title": ADAPTERS[NAME].title, "base": BASE,
                             "base_sha256": BASE_SHA, "adapter": NAME,
                             "adapter_sha256": hashlib.sha256(weights).hexdigest(),
                             "dtype": "float32"}
    assert (path / "README.md").read_text() == "# dac-qwen-0.5b\n\nthe model card\n"
    for f in ("tokenizer.json", "tokenizer_config.json"):
        assert (path / f).read_bytes() == (setup["base"] / f).read_bytes()
    assert resolve_model(NAME) == path
    model, tok = load(NAME)
    assert model.config.model_type == "qwen2" and len(tok) == model.config.vocab_size
    assert leftovers(setup["root"]) == [NAME, BASE]
    # again: nothing to do; --force merges again and replaces it
    calls = []
    merge = adapter_mod.merge_adapter
    monkeypatch.setattr(adapter_mod, "merge_adapter",
                        lambda *a, **k: (calls.append(a), merge(*a, **k))[1])
    assert fetch(NAME, progress=lambda m: None) == path and calls == []
    (path / "stale").write_text("x")
    assert main(["models", "get", NAME, "--force"]) == 0
    assert len(calls) == 1 and not (path / "stale").exists() and is_ready(path)
    assert leftovers(setup["root"]) == [NAME, BASE]


def test_end_tokens_join_the_generation_configs_eos(setup, tokenizer, tmp_path):
    out = tmp_path / "merged"
    out.mkdir()
    tokenizer.save_pretrained(out)
    eos, unk = tokenizer.convert_tokens_to_ids(["</s>", "<unk>"])
    (out / "generation_config.json").write_text(json.dumps({"eos_token_id": eos, "top_k": 5}))
    assert adapter_mod.add_end_tokens(out, ("</s>", "<unk>", "<|not-a-token|>")) == [unk]
    cfg = json.loads((out / "generation_config.json").read_text())
    assert cfg == {"eos_token_id": [eos, unk], "top_k": 5}
    (out / "generation_config.json").unlink()
    assert adapter_mod.add_end_tokens(out, ("<unk>",)) == [unk]
    assert json.loads((out / "generation_config.json").read_text()) == {"eos_token_id": [unk]}
    assert ADAPTERS[NAME].end_tokens == ("<|im_end|>", "<|endoftext|>")


@pytest.mark.parametrize("remove", ["folder", "adapter_model.safetensors"])
def test_a_missing_adapter_is_one_line_and_leaves_nothing(setup, capsys, remove):
    if remove == "folder":
        shutil.rmtree(setup["adapter"])
    else:
        (setup["adapter"] / remove).unlink()
    line = one_line(capsys, main(["models", "get", NAME]))
    assert f"the {NAME} adapter is not in this installation: " in line
    assert "adapter_model.safetensors" in line
    assert leftovers(setup["root"]) == [BASE]


def test_a_failed_merge_leaves_nothing(setup, capsys):
    def broken(base_dir, adapter, out, *, progress=print):
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("size mismatch for q_proj.lora_A.weight\nmore detail")

    with pytest.raises(FetchError) as e:
        fetch_adapted(NAME, progress=lambda m: None, merger=broken)
    assert str(e.value) == (f"cannot apply the {NAME} adapter to {BASE}: "
                            "size mismatch for q_proj.lora_A.weight")
    assert leftovers(setup["root"]) == [BASE]

    def interrupted(base_dir, adapter, out, *, progress=print):
        out.mkdir(parents=True)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fetch_adapted(NAME, progress=lambda m: None, merger=interrupted)
    assert leftovers(setup["root"]) == [BASE]


def test_models_list_shows_the_adapted_model(setup, capsys):
    def row():
        assert main(["models", "list", "--json"]) == 0
        rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["models"]}
        assert set(CATALOG) < set(rows)
        return rows[NAME]

    r = row()
    size = (setup["adapter"] / "adapter_model.safetensors").stat().st_size
    assert r["base"] == BASE and r["protocol"] == "da" and r["state"] == "not fetched"
    assert r["adapter_mb"] == round(size / 1e6, 1) and r["path"] is None
    fetch(NAME, progress=lambda m: None)
    assert row()["state"] == "ready" and row()["path"] == str(setup["root"] / NAME)
    assert main(["models", "list"]) == 0
    assert NAME in capsys.readouterr().out


def test_an_unknown_name_lists_the_adapted_models_too(capsys):
    line = one_line(capsys, main(["models", "get", "no-such-model"]))
    assert "unknown model" in line and NAME in line


def test_the_demo_runs_the_adapted_model_under_its_protocol(setup, tmp_path, capsys):
    fetch(NAME, progress=lambda m: None)
    rc = main(["demo", "--model", NAME, "--length", "512", "--max-new-tokens", "4",
               "--out", str(tmp_path / "demo"), "--json"])
    assert rc == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["model"] == NAME and payload["protocol"] == "da"
    assert payload["runs"]["dac"]["prompt_tokens"] > 512
    assert "<focus magic_chunks=" in payload["ideal"]


def test_make_demo_real_fetches_then_runs_the_demo():
    make = shutil.which("make")
    repo = Path(__file__).resolve().parents[2]
    if make is None or not (repo / "Makefile").is_file():
        pytest.skip("no make, or not a source checkout")
    out = subprocess.run([make, "-n", "-C", str(repo), "demo-real"], capture_output=True,
                         text=True, check=True).stdout
    get, demo = "bin/dac models get dac-qwen-0.5b", "bin/dac demo --model dac-qwen-0.5b"
    assert get in out and demo in out and out.index(get) < out.index(demo)
