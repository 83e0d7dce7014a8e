"""A small evaluation of a trained model on held-out seeds: accuracy versus decoding cost.

For each (task, length) cell: DAC and full attention on the same samples, then streaming and
Quest at DAC's measured KV budget (same cost). Seeds ``seed0 .. seed0 + n - 1`` are disjoint
from training seeds (``TrainConfig.seed_base`` and up). The model card's numbers come from
here: one JSON file (``{"records", "summary", "plan", "prompt"}``) rather than a run folder,
so runs split over GPUs or time-limited calls can be merged (``--merge``).

Generation goes through an engine (:class:`~dac.engines.base.HFEngine` or
:class:`~dac.engines.fast.FastEngine`) and :func:`dac.eval.runner.run_samples`, so the
records are the suite's (:func:`dac.eval.records.make_record`). :func:`summarize` also reads
the records of evaluations written before that (the shipped ``eval.json``), through
:func:`card_fields`.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from ..models import load_prompt_options
from ..planning.blocks import PlanConfig
from ..protocol.grammar import DirectiveError, Mode, parse_directive
from ..tasks import TASKS, make_sample
from ..tasks.core import directive_for
from .loop import plan_config

#: the engines a cell can run on: the reference HF engine (model.generate + hooks; records
#: Quest's per-head evidence recall too) or :class:`dac.engines.fast.FastEngine` (static
#: cache, FlexAttention, CUDA graphs on a GPU; the same records, tested, without Quest's
#: per-step recall)
ENGINES = ("hf", "fast")
#: families whose ideal directive is a focus: judged by the union of their focuses too
FOCUS_FAMILIES = ("retrieval", "multi")


def make_engine(name: str, model: Any, tokenizer: Any) -> Any:
    """The engine ``name`` (one of :data:`ENGINES`) on a loaded model."""
    if name == "fast":
        from ..engines.fast import FastEngine

        return FastEngine(model, tokenizer)
    if name == "hf":
        from ..engines.base import HFEngine

        return HFEngine(model, tokenizer)
    raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {name!r}")


def _mode_of(text: str | None) -> Mode | None:
    """The mode a declaration's text names, or None if it is not a directive."""
    text = text or ""
    if not (text.startswith("[[") and text.endswith("]]")):
        return None
    try:
        return parse_directive(text[2:-2]).mode
    except DirectiveError:
        return None


def card_fields(record: dict[str, Any]) -> dict[str, Any]:
    """What the summary and the card read from one record, from either record schema: the
    suite's (``dac.eval.record/…``, written since the evaluation runs through
    :func:`dac.eval.runner.run_samples`) or the legacy one of the shipped ``eval.json``.

    ``first_exact`` / ``final_exact``: the first / last declaration (well-formed or not) is
    well-formed and the ideal one (``final_exact`` ``None``: a legacy record from before the
    last declaration was recorded); ``exact``: the one judged, the last (else the first);
    ``union_exact``: all well-formed focuses together name the ideal sections (``None``: not
    recorded); ``final``: the last declaration's text; ``final_mode_ok``: it names the task's
    ideal mode (legacy records without ``final``: the first declaration does);
    ``fraction``: KV read / full; ``policy``: its name without parameters;
    ``bound_sections``: decoded with the section bound (a record that does not say
    predates the bound: ``False``)."""
    family = record["family"]
    if "kv" in record:  # the suite's record
        timeline = record["directives"]
        final = timeline[-1]["text"] if timeline else None
        ideal = _mode_of(record.get("ideal_directive")) or directive_for(family, [1]).mode
        out = {"fraction": record["kv"]["fraction"], "first_exact": record["first_exact"],
               "final_exact": record["final_exact"],
               "union_exact": record["focus_union_exact"], "final": final,
               "final_mode_ok": _mode_of(final) is ideal}
    else:  # the legacy record of dac.train.evaluate's own cells
        if "final" in record:
            final = record["final"]
            mode_ok = _mode_of(final) is directive_for(family, [1]).mode
        else:
            final, mode_ok = record.get("declared"), bool(record["mode_ok"])
        out = {"fraction": record["fraction"], "first_exact": bool(record["exact"]),
               "final_exact": record.get("final_exact"),
               "union_exact": record.get("focus_union_exact"), "final": final,
               "final_mode_ok": mode_ok}
    judged = out["first_exact"] if out["final_exact"] is None else out["final_exact"]
    return {"id": record["id"], "task": record["task"], "family": family,
            "length": record["length"], "policy": record["policy"].split(":")[0],
            "score": record["score"], "bound_sections": bool(record.get("bound_sections")),
            "exact": bool(judged), **out}


def final_mode_ok(record: dict[str, Any]) -> bool:
    """Does the record's last declaration name its task's ideal mode (focus for retrieval and
    multi-region, global for aggregation, local for tail tasks)? Its sections are judged by
    ``final_exact``. Records from before ``final`` existed fall back to the first declaration."""
    return bool(card_fields(record)["final_mode_ok"])


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (family, length, policy): accuracy, KV read, and adherence judged on the declaration
    in force at the end of the output, the one the answer is written under (a lead-in format,
    ``[[local]] lead [[global]][[focus S3]] value``, declares three times; most outputs once).
    ``exact_first``: the first declaration is the ideal one; ``exact_union`` (focus tasks):
    all focuses together name the ideal sections. ``bound_sections``: whether the cell's
    answers were decoded with the section bound (``"mixed"`` if its records differ; a record
    without the key predates the bound). Reads either record schema (:func:`card_fields`)."""
    cells: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        f = card_fields(r)
        cells[(f["family"], f["length"], f["policy"])].append(f)
    rows = []
    for (fam, length, pol), fs in sorted(cells.items()):
        n = len(fs)

        def rate(xs: Any) -> float:
            return round(sum(bool(x) for x in xs) / n, 4)

        bound = {f["bound_sections"] for f in fs}
        rows.append({"family": fam, "length": length, "policy": pol, "n": n,
                     "bound_sections": bound.pop() if len(bound) == 1 else "mixed",
                     "accuracy": round(sum(f["score"] for f in fs) / n, 4),
                     "kv_fraction": round(sum(f["fraction"] for f in fs) / n, 4),
                     "mode_adherence": rate(f["final_mode_ok"] for f in fs),
                     "exact_directive": rate(f["exact"] for f in fs),
                     **({"exact_first": rate(f["first_exact"] for f in fs)}
                        if all(f["final_exact"] is not None for f in fs) else {}),
                     **({"exact_union": rate(f["union_exact"] for f in fs)}
                        if fam in FOCUS_FAMILIES
                        and all(f["union_exact"] is not None for f in fs) else {})})
    return rows


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from several runs (cells split over GPUs or time-limited calls): a later
    run's record for the same prompt and policy replaces an earlier one. A same-cost baseline
    is one policy whatever its parameters (``streaming:window=...``): re-measured, a cell's
    DAC budget may change, and the baseline run at the new budget replaces the old one."""
    records: dict[tuple[str, str], dict[str, Any]] = {}
    plans = {json.dumps([r.get("plan"), r.get("prompt", {})], sort_keys=True) for r in results}
    if len(plans) > 1:
        raise ValueError("the runs were evaluated under different plans or prompts: "
                         + " / ".join(sorted(plans)))
    for res in results:
        for r in res["records"]:
            records[(r["id"], r["policy"].split(":")[0])] = r
    out = list(records.values())
    first = results[0] if results else {}
    return {"records": out, "summary": summarize(out), "plan": first.get("plan"),
            **({"prompt": first["prompt"]} if first.get("prompt") else {})}


def evaluate(model_dir: str | Path, *, tasks: list[str], lengths: list[int], n: int,
             seed0: int = 0, batch: int = 16, device: str | None = None,
             same_cost: bool = True, time_limit: float | None = None,
             sections: int | None = None, bound_sections: bool = True,
             engine: str = "hf", log: Any = print) -> dict[str, Any]:
    """``sections``: cut every context into this many sections instead of the suite's one per
    512 tokens (how well the model names sections it rarely sees at the default);
    ``bound_sections``: decode with the engine's section bound (its default); ``engine``:
    one of :data:`ENGINES`. The same-cost baselines run at DAC's mean KV read per decode
    step of the cell (streaming's window less the sink tokens)."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    from ..eval.runner import run_samples
    from ..models import load

    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tok = load(model_dir, dtype=torch.bfloat16 if dev == "cuda" else torch.float32,
                      device=dev)
    eng = make_engine(engine, model, tok)
    cfg = plan_config(model_dir) or PlanConfig()
    prompt = load_prompt_options(model_dir)
    t0 = time.time()
    records: list[dict[str, Any]] = []

    def result() -> dict[str, Any]:
        return {"records": records, "summary": summarize(records), "plan": cfg.__dict__,
                **({"prompt": prompt} if prompt else {})}

    for length in lengths:
        for task in tasks:
            if time_limit and time.time() - t0 > time_limit:
                log(json.dumps({"event": "time_limit", "at": f"{task}@{length}"}))
                return result()
            samples = [make_sample(task, tok, length, seed0 + i, sections) for i in range(n)]

            def run(policy: str) -> list[dict[str, Any]]:
                return run_samples(eng, samples, policy, cfg,
                                   max_new_tokens=TASKS[task].max_new_tokens,
                                   prompt_options=prompt, bound_sections=bound_sections,
                                   batch_size=batch)

            cell = {pol: run(pol) for pol in ("full", "dac")}
            records += cell["full"] + cell["dac"]
            if same_cost and TASKS[task].family in FOCUS_FAMILIES:
                budget = sum(r["kv"]["read"] / max(1, len(r["kv"]["per_step"]))
                             for r in cell["dac"]) / len(cell["dac"])
                window = max(cfg.block_size, int(budget - cfg.sink_tokens))
                tokens = max(cfg.block_size, int(budget))
                for pol in (f"streaming:window={window}",
                            f"quest:budget_tokens={tokens},dense_layers=0"):
                    records += run(pol)
            acc = {p: round(sum(r["score"] for r in rs) / len(rs), 3) for p, rs in cell.items()}
            log(json.dumps({"event": "cell", "task": task, "length": length, "acc": acc,
                            "dac_fraction": round(sum(r["kv"]["fraction"] for r in cell["dac"])
                                                  / len(cell["dac"]), 3),
                            "elapsed_s": round(time.time() - t0, 1)}))
    return result()


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("model", nargs="?")
    p.add_argument("--merge", nargs="+", metavar="RESULT",
                   help="instead of evaluating: merge these result files into --out")
    p.add_argument("--tasks", default="all")
    p.add_argument("--lengths", default="4096,8192")
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--time-limit", type=float, default=None)
    p.add_argument("--no-same-cost", action="store_true")
    p.add_argument("--sections", type=int, default=None,
                   help="sections per context (default: the suite's, one per 512 tokens)")
    p.add_argument("--no-bound-sections", action="store_true",
                   help="decode without the section bound (a focus past the context then "
                        "falls back to global, as before the bound existed)")
    p.add_argument("--engine", choices=ENGINES, default="hf",
                   help="hf: the reference engine; fast: the static-cache FlexAttention "
                        "engine with CUDA graphs on a GPU (the same records, without Quest's "
                        "per-step evidence recall)")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    from ..tasks import resolve_tasks
    from ..tasks.core import MAX_SECTIONS

    if a.merge:
        if a.model:
            p.error("--merge takes result files, not a model")
        try:
            res = merge([json.loads(Path(f).read_text()) for f in a.merge])
        except (OSError, ValueError, KeyError, TypeError) as e:
            p.error(f"cannot merge: {e}")
    else:
        if not a.model:
            p.error("a model directory is required (or --merge RESULT...)")
        if a.sections is not None and not 1 <= a.sections <= MAX_SECTIONS:
            p.error(f"--sections must lie in [1, {MAX_SECTIONS}], got {a.sections}")
        try:
            tasks = resolve_tasks(a.tasks)
            lengths = [int(x) for x in a.lengths.split(",")]
        except ValueError as e:
            p.error(str(e))
        res = evaluate(a.model, tasks=tasks, lengths=lengths, n=a.n, batch=a.batch,
                       same_cost=not a.no_same_cost, time_limit=a.time_limit,
                       sections=a.sections, bound_sections=not a.no_bound_sections,
                       engine=a.engine)
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    for row in res["summary"]:
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
