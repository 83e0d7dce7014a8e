"""``dac eval`` run on one engine into a folder, and records compared across engines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dac.cli import main
from dac.eval.folder import read_cell

#: what differs between engines by construction: the engine's name and the wall time
ENGINE_FIELDS = ("engine", "wall_s")


def eval_cells(model_dir: Path, out: Path, engine: str, *, device: str, tasks: list[str],
               policies: list[str], length: int = 768, samples: int = 2,
               new_tokens: int = 8) -> dict[str, list[dict[str, Any]]]:
    """Run ``dac eval --engine ENGINE`` into ``out``; its records, per cell file name."""
    args = ["eval", "--model", str(model_dir), "--protocol", "brackets", "--tasks", ",".join(tasks),
            "--lengths", str(length), "--policies", ",".join(policies),
            "--samples", str(samples), "--batch-size", "2",
            "--max-new-tokens", str(new_tokens), "--local-window", "256", "--window", "64",
            "--engine", engine, "--device", device, "--out", str(out), "--no-progress"]
    assert main(args) == 0
    return {p.name: read_cell(p) for p in sorted((out / "cells").glob("*.jsonl"))}


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    """A record without the fields that differ between engines by construction; for Quest
    also without the per-step evidence recall and the per-head block shares (the fast engine
    selects per head on the device and does not measure them) and without the KV reads,
    compared apart (:func:`assert_reads`)."""
    out = {k: v for k, v in record.items() if k not in ENGINE_FIELDS}
    if record["policy"].startswith("quest"):
        out.pop("evidence_recall")
        out.pop("block_share", None)  # per-head shares: measured by the reference engine only
        out["stats"] = {k: v for k, v in out["stats"].items()
                        if k not in ("attended_tokens", "per_step_ratio", "global_kv_bytes")}
        out["kv"] = {k: v for k, v in out["kv"].items()
                     if k not in ("recall_per_step", "read", "fraction", "per_step")}
    return out


def assert_reads(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Equal KV reads, up to float rounding of a per-head mean summed on another device."""
    assert a["kv"]["full"] == b["kv"]["full"]
    assert a["kv"]["read"] == pytest.approx(b["kv"]["read"], rel=1e-5, abs=0.01)
    assert a["kv"]["fraction"] == pytest.approx(b["kv"]["fraction"], rel=1e-5, abs=1e-6)
    assert a["kv"]["per_step"] == pytest.approx(b["kv"]["per_step"], abs=0.011)


def assert_same_records(fast: dict[str, list[dict[str, Any]]],
                        ref: dict[str, list[dict[str, Any]]]) -> None:
    """Every cell holds the same records on both engines (see :func:`comparable`)."""
    assert list(fast) == list(ref) and fast
    for name in ref:
        assert len(fast[name]) == len(ref[name])
        for a, b in zip(fast[name], ref[name]):
            assert comparable(a) == comparable(b), name
            assert_reads(a, b)
            assert (a["engine"], b["engine"]) == ("fast", "hf")
