"""The evaluation runner: tasks x lengths x policies through one engine, resumable.

A run is a folder::

    DIR/config.json                 the exact configuration (plus versions)
    DIR/cells/<task>__<length>__<policy>.jsonl   one record per sample (see records.py)
    DIR/metrics.json, DIR/metrics.csv            the summary (see metrics.py)

A cell file is written to a temporary name and renamed when the cell is complete, so a file
that exists is a finished cell: an interrupted run started again with the same ``--out`` skips
it and recomputes only the unfinished cells.

:func:`run_samples` is one cell's work (batches through an engine, one record each); the
model card's evaluation (:mod:`dac.train.evaluate`) runs its cells through it too.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..tasks import Sample, make_sample
from .arms import resolve_arm
from .config import EvalConfig
from .folder import cell_path, read_cell, write_jsonl
from .metrics import write_metrics
from .records import make_record

if TYPE_CHECKING:
    from ..engines.base import Engine
    from ..planning.blocks import PlanConfig

__all__ = ["cell_path", "prepare_out", "read_cell", "run_eval", "run_samples"]


def _versions() -> dict[str, str]:
    import torch
    import transformers

    from .. import __version__ as dac_version
    from ..protocol.prompt import PROTOCOL_VERSION

    return {"dac": dac_version, "protocol": PROTOCOL_VERSION, "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}


def prepare_out(out: Path, config: EvalConfig) -> None:
    """Create ``out`` or check that it holds a run of the same configuration."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.json"
    if path.exists():
        try:
            old = EvalConfig.from_dict(json.loads(path.read_text()))
        except (ValueError, TypeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path} is not a dac eval configuration: {e}") from None
        a, b = old.identity(), config.identity()
        diff = [k for k in {**a, **b} if a.get(k) != b.get(k)]
        if diff:
            raise ValueError(f"{out} holds a run with a different {', '.join(diff)} "
                             f"({', '.join(f'{k}={a.get(k)!r}' for k in diff)}); "
                             f"use another --out")
        # a resumed run may add tasks, lengths or policies: keep the union
        for name in ("tasks", "lengths", "policies"):
            merged = list(getattr(old, name))
            merged += [x for x in getattr(config, name) if x not in merged]
            setattr(config, name, merged)
        for name, data in old.sources.items():
            if config.sources.get(name, data) != data:
                raise ValueError(f"{out} holds {name} read from {data}, not "
                                 f"{config.sources[name]}; use another --out")
        config.sources = {**old.sources, **config.sources}
    payload = {**config.to_dict(), "versions": _versions()}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def run_eval(engine: Engine, config: EvalConfig, out: str | os.PathLike, *,
             tasks: list[str] | None = None, lengths: list[int] | None = None,
             policies: list[str] | None = None, progress: bool = True,
             log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every unfinished cell of ``config`` (or the given subset); returns the metrics."""
    out = Path(out)
    prepare_out(out, config)
    (out / "cells").mkdir(exist_ok=True)
    tasks = tasks or config.tasks
    lengths = lengths or config.lengths
    policies = policies or config.policies
    cfg = config.plan_config
    say = log or (lambda msg: None)
    todo = [(t, n, p) for t in tasks for n in lengths for p in policies
            if not cell_path(out, t, n, p).exists()]
    src_cells = [(name, n, p) for name in config.sources
                 for n in (config.source_lengths(name)) for p in policies]
    src_todo = [c for c in src_cells if not cell_path(out, *c).exists()]
    skipped = len(tasks) * len(lengths) * len(policies) + len(src_cells) - len(todo) - len(
        src_todo)
    if skipped:
        say(f"resuming: {skipped} finished cell(s) skipped, {len(todo) + len(src_todo)} to run")
    from tqdm.auto import tqdm

    bar = tqdm(total=(len(todo) + len(src_todo)) * config.samples, unit="sample",
               disable=not progress, dynamic_ncols=True)
    samples: dict[tuple[str, int], list[Any]] = {}
    try:
        for task, length, policy in todo:
            bar.set_description(f"{task} {length} {policy}")
            key = (task, length)
            if key not in samples:
                samples.clear()  # keep one (task, length) in memory
                samples[key] = [make_sample(task, engine.tokenizer, length, s)
                                for s in config.seeds()]
            _run_cell(engine, config, out, task, length, policy, samples[key], cfg,
                      bar.update)
        for name, length, policy in src_todo:
            bar.set_description(f"{name} {policy}")
            key = (name, length)
            if key not in samples:
                samples.clear()
                samples[key] = source_items(name, config.sources[name], engine.tokenizer,
                                            config, out, say, length=length,
                                            limit=position_limit(engine))
                bar.total -= config.samples - len(samples[key])
                bar.refresh()
            if samples[key]:
                _run_cell(engine, config, out, name, length, policy, samples[key], cfg,
                          bar.update)
    finally:
        bar.close()
    return write_metrics(out)


def position_limit(engine: Any) -> int | None:
    """The positions the engine's model holds (None: not known)."""
    from ..engines.support import max_positions

    model = getattr(engine, "model", None)
    return max_positions(model) if model is not None else getattr(engine, "max_model_len", None)


def layout_for(sample: Sample, tokenizer: Any, protocol: str = "brackets",
               prompt_options: Mapping[str, Any] | None = None) -> Any:
    """The sample's prompt under ``protocol``: its sections as numbered sections (brackets,
    with the model's prompt options) or one magic chunk each (da), or inline (vanilla)."""
    if protocol == "brackets":
        return sample.layout(tokenizer, **(prompt_options or {}))
    from ..protocol.base import get_protocol

    context = (sample.context_for(protocol) if hasattr(sample, "context_for")
               else list(sample.sections))
    return get_protocol(protocol).build_prompt(tokenizer, context, sample.question)


def run_samples(engine: Engine, samples: Sequence[Sample], policy: str, config: PlanConfig,
                *, max_new_tokens: int, prompt_options: Mapping[str, Any] | None = None,
                bound_sections: bool = True, batch_size: int = 4,
                advance: Callable[[int], Any] | None = None,
                protocol: str = "brackets", arm: str | None = None,
                sampling: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Generate for ``samples`` under ``policy`` in batches of ``batch_size``: one record
    (:func:`~dac.eval.records.make_record`) per sample, in order.

    ``prompt_options``: the :func:`dac.protocol.build_prompt` options the model was trained
    with; ``bound_sections``: the engine's section bound, recorded per record as applied
    (only policies that read directives are bounded); ``advance`` is called with each
    batch's size (a progress bar). A record's ``wall_s`` is its batch's time / batch size;
    ``arm``: the label its records carry (:mod:`dac.eval.arms`; default the policy);
    ``sampling``: :class:`dac.runtime.Sampling` fields (``None``: greedy).
    """
    from ..planning import get_policy

    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    bounded = bool(bound_sections and get_policy(policy).reads_directives)
    name = getattr(engine, "name", None)
    records: list[dict[str, Any]] = []
    for i in range(0, len(samples), batch_size):
        batch = list(samples[i:i + batch_size])
        layouts = [layout_for(s, engine.tokenizer, protocol, prompt_options) for s in batch]
        evidence = [s.evidence_spans(lay) for s, lay in zip(batch, layouts)]
        t0 = time.perf_counter()
        results = engine.generate(layouts, policy=policy, config=config,
                                  max_new_tokens=max_new_tokens, evidence=evidence,
                                  bound_sections=bound_sections, sampling=dict(sampling or {}))
        wall = time.perf_counter() - t0
        records += [make_record(s, lay, ev, res, policy, config.block_size, wall / len(batch),
                                bound_sections=bounded, engine=name, arm=arm)
                    for s, lay, ev, res in zip(batch, layouts, evidence, results)]
        if advance is not None:
            advance(len(batch))
    return records


def source_items(name: str, data: str, tokenizer: Any, config: EvalConfig, out: Path,
                 say: Callable[[str], None], *, length: int,
                 limit: int | None = None) -> list[Any]:
    """The examples of source ``name`` that the run evaluates: those whose context fits
    ``config.budget`` tokens of the evaluated model's tokenizer, then up to
    ``config.samples`` drawn with ``config.seed``, the same for every arm. What was dropped
    is written to ``out/selection/<name>.json`` and said: nothing shrinks an average
    silently. A RULER source with no data file (``data == ""``) is generated offline at
    ``length`` tokens. ``limit``: the model's positions; an example whose prompt under some
    arm's protocol leaves no room for the new tokens is dropped (and listed) too."""
    from .items import SourceItem
    from .sources import load_source, select

    if data:
        examples = load_source(name, data)
    else:
        examples = load_source(name, None, tokenizer=tokenizer, length=length,
                               n=config.samples, seed=config.seed)
    sel = select(examples, tokenizer, config.budget, config.samples, config.seed)
    tokens = {ex.id: sel.tokens[ex.id] for ex in sel.kept}
    items = [SourceItem(ex, length, tokens[ex.id]) for ex in sel.kept]
    too_long = []
    if limit is not None:  # every arm must see the same examples: drop those any arm can't fit
        protocols = {resolve_arm(p, config.protocol).protocol for p in config.policies}
        room = limit - config.new_tokens(name)
        for it in list(items):
            worst = max(layout_for(it, tokenizer, proto, config.prompt).prompt_len
                        for proto in protocols)
            if worst > room:
                items.remove(it)
                too_long.append([it.example.id, worst])
    folder = out / "selection"
    folder.mkdir(exist_ok=True)
    payload = {"source": name, "data": str(data), "budget": config.budget,
               "seed": config.seed, "examples": len(examples),
               "kept": [[ex.id, tokens[ex.id]] for ex in sel.kept],
               "dropped_over_budget": [list(d) for d in sel.dropped],
               "dropped_prompt_over_model_limit": too_long}
    stem = name if data else f"{name}__{length}"
    tmp = folder / f"{stem}.json.tmp"
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    os.replace(tmp, folder / f"{stem}.json")
    if sel.dropped:
        say(f"{name}: {len(sel.dropped)} of {len(examples)} example(s) over the budget of "
            f"{config.budget} tokens dropped (listed in {folder / (stem + '.json')})")
    if too_long:
        say(f"{name}: {len(too_long)} example(s) dropped: the whole prompt of some arm does "
            f"not fit the model's {limit} positions with {config.new_tokens(name)} new tokens")
    if not items:
        say(f"{name}: no example left to evaluate (see {folder}): no cell")
    return items


def _run_cell(engine: Engine, config: EvalConfig, out: Path, task: str, length: int,
              label: str, samples: list[Any], cfg: PlanConfig,
              advance: Callable[[int], Any]) -> None:
    arm = resolve_arm(label, config.protocol)
    records = run_samples(engine, samples, arm.policy, cfg, max_new_tokens=config.new_tokens(task),
                          prompt_options=config.prompt if arm.protocol == "brackets" else None,
                          bound_sections=config.bound_sections, batch_size=config.batch_size,
                          advance=advance, protocol=arm.protocol, arm=label,
                          sampling=config.sampling)
    write_jsonl(cell_path(out, task, length, label), records)
