"""A fake package index: tiny wheels in a folder that ``pip download --find-links`` reads."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from dac.catalog.entries import CATALOG, CatalogEntry, Part


def make_wheel(folder: Path, package: str, version: str, files: dict[str, bytes]) -> Path:
    """A minimal valid wheel of ``package==version`` holding ``files``."""
    mod = package.replace("-", "_")
    path = folder / f"{mod}-{version}-py3-none-any.whl"
    info = f"{mod}-{version}.dist-info"
    meta = {f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n",
            f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                             "Tag: py3-none-any\n",
            f"{info}/top_level.txt": mod + "\n"}
    with zipfile.ZipFile(path, "w") as z:
        for name, data in {**files, **meta}.items():
            z.writestr(name, data)
        z.writestr(f"{info}/RECORD", "")
    return path


@pytest.fixture
def index(tmp_path):
    """A folder of wheels: a two-part model and a one-part model (fake GGUF bytes)."""
    d = tmp_path / "index"
    d.mkdir()
    pieces = [b"GGUF" + bytes(range(256)) * 40, b"the second piece" * 100]
    for i, data in enumerate(pieces, 1):
        make_wheel(d, f"dac-fake-model-part{i}", "1.0.0",
                   {f"dac_fake_model_part{i}/data/part{i:02d}.bin": data,
                    f"dac_fake_model_part{i}/__init__.py": b""})
    return d, hashlib.sha256(b"".join(pieces)).hexdigest()


def fake_entry(name: str, sha256: str, parts: int = 2, package: str = "dac-fake-model") -> CatalogEntry:
    return CatalogEntry(
        name=name, title="Fake", architecture="llama", kind="instruct", params="1K",
        quant="Q4_0", gguf_name="fake.gguf", gguf_bytes=12_000, sha256=sha256,
        parts=tuple(Part(f"{package}-part{i}", "1.0.0",
                         f"{package.replace('-', '_')}_part{i}/data/part{i:02d}.bin")
                    for i in range(1, parts + 1)), n_params=1000)


@pytest.fixture
def catalog(monkeypatch, index, tmp_path):
    """Fake entries in the catalog, the cache under tmp_path, a fake converter."""
    folder, digest = index
    monkeypatch.setenv("DAC_CACHE", str(tmp_path / "cache"))
    good = fake_entry("fake-model", digest)
    monkeypatch.setitem(CATALOG, good.name, good)
    monkeypatch.setitem(CATALOG, "fake-badhash", fake_entry("fake-badhash", "0" * 64))
    monkeypatch.setitem(CATALOG, "fake-missing",
                        fake_entry("fake-missing", digest, package="dac-fake-absent"))
    calls = []

    def converter(gguf, out, *, progress=print):
        calls.append(Path(gguf).read_bytes())
        out.mkdir(parents=True)
        (out / "config.json").write_text('{"model_type": "llama"}')
        (out / "model.safetensors").write_bytes(b"weights")

    monkeypatch.setattr("dac.catalog.fetch.convert_gguf", converter)
    monkeypatch.setattr("dac.catalog.fetch.check_convert_deps", lambda: None)
    return {"find_links": str(folder), "root": tmp_path / "cache" / "models",
            "calls": calls, "digest": digest}
