"""Applying a LoRA adapter shipped in this package to a fetched catalog model.

The adapters live in ``dac/assets/NAME`` (``adapter_config.json``, ``adapter_model.safetensors``
and the model card ``README.md``), one per :data:`dac.catalog.entries.ADAPTERS` entry.
:func:`merge_adapter` loads the base directory with transformers, applies the adapter with
``peft`` and merges it into the weights, so the result is a plain model directory that every
engine loads without peft. The cache, the atomic move into place and the one-line errors are
:func:`dac.catalog.fetch.fetch_adapted`'s (``dac models get NAME``).

This module imports nothing else from the package: :mod:`dac.catalog.fetch` calls it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: where the adapters' folders are (tests point it elsewhere)
ADAPTER_ROOT = Path(__file__).resolve().parent.parent / "assets"
#: what an adapter folder must hold
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
ADAPTER_WEIGHTS = "adapter_model.safetensors"
#: the adapter's model card, copied beside the merged weights
MODEL_CARD = "README.md"
#: copied from the base directory as they are (the tokenizer, its chat template, sampling)
BASE_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
              "chat_template.jinja", "generation_config.json")


def adapter_dir(folder: str) -> Path:
    """The folder of the adapter named ``folder`` (an :class:`AdapterEntry`'s ``adapter``)."""
    return ADAPTER_ROOT / folder


def missing_files(folder: Path) -> list[str]:
    """The :data:`ADAPTER_FILES` that ``folder`` lacks (all of them if it is no folder)."""
    return [f for f in ADAPTER_FILES if not (folder / f).is_file()]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def _base_dtype(base_dir: Path) -> str:
    """The dtype the base's weights are stored in (its config.json), bfloat16 if unsaid."""
    try:
        cfg = json.loads((base_dir / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return "bfloat16"
    dtype = cfg.get("dtype") or cfg.get("torch_dtype")
    return dtype if dtype in ("float32", "bfloat16", "float16") else "bfloat16"


def merge_adapter(base_dir: str | os.PathLike, adapter: str | os.PathLike,
                  out: str | os.PathLike, *, progress: Callable[[str], None] = print) -> None:
    """Save the model in ``base_dir`` with the LoRA adapter in ``adapter`` merged into its
    weights as a safetensors directory ``out`` (weights and config only).

    The base is loaded in float32 on the CPU, the adapter applied (``PeftModel``) and merged
    (``merge_and_unload``) there, and the sum rounded once to the dtype the base is stored in
    (bfloat16 for a catalog model). Errors are transformers', peft's and torch's own."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    base_dir, adapter, out = Path(base_dir), Path(adapter), Path(out)
    dtype = _base_dtype(base_dir)
    hf_logging.disable_progress_bar()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        progress(f"loading {base_dir.name}")
        model: Any = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32,
                                                          local_files_only=True)
        progress(f"applying the adapter {adapter.name} and merging it")
        model = PeftModel.from_pretrained(model, adapter, is_trainable=False)
        model = model.merge_and_unload()
        model.to(getattr(torch, dtype))
        model.config.dtype = dtype
        progress(f"writing safetensors ({dtype})")
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out, safe_serialization=True)
    finally:
        hf_logging.set_verbosity(verbosity)


def copy_base_files(base_dir: Path, out: Path) -> list[str]:
    """Copy the base's :data:`BASE_FILES` that exist into ``out``; their names."""
    copied = []
    for name in BASE_FILES:
        if (base_dir / name).is_file():
            shutil.copyfile(base_dir / name, out / name)
            copied.append(name)
    return copied


def add_end_tokens(out: Path, tokens: tuple[str, ...] | list[str]) -> list[int]:
    """Add the ids of ``tokens`` (special tokens of ``out/tokenizer.json``) to the
    ``eos_token_id`` of ``out/generation_config.json`` (created if there is none), keeping
    what it lists; the ids added. A token the tokenizer lacks is left out."""
    if not tokens or not (out / "tokenizer.json").is_file():
        return []
    added = json.loads((out / "tokenizer.json").read_text()).get("added_tokens") or []
    by_text = {t.get("content"): t.get("id") for t in added if isinstance(t, dict)}
    ids = [int(by_text[t]) for t in tokens if isinstance(by_text.get(t), int)]
    if not ids:
        return []
    f = out / "generation_config.json"
    cfg = json.loads(f.read_text()) if f.is_file() else {}
    eos = cfg.get("eos_token_id")
    have = [int(e) for e in (eos if isinstance(eos, list) else [eos] if eos is not None else [])]
    new = [i for i in ids if i not in have]
    cfg["eos_token_id"] = have + new
    f.write_text(json.dumps(cfg, indent=2) + "\n")
    return new
