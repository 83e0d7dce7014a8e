"""A small evaluation of a trained model on held-out seeds: accuracy versus decoding cost.

For each (task, length) cell: DAC and full attention on the same samples, then streaming and
Quest at DAC's measured KV budget (same cost). Seeds ``seed0 .. seed0 + n - 1`` are disjoint
from training seeds (``TrainConfig.seed_base`` and up). Used for the model card when the
suite's runner is not available on the machine that has the GPU.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from ..engines.hf import generate
from ..models import load_prompt_options
from ..planning.blocks import PlanConfig
from ..planning import get_policy
from ..protocol.grammar import DirectiveError, Mode, parse_directive
from ..tasks import TASKS, make_sample, score
from ..tasks.core import directive_for
from .loop import plan_config


def adherence(sample: Any, result: Any) -> dict[str, Any]:
    """Did the first declaration match the ideal one (mode; for focus, the evidence covered)?
    And the last one (``final``, ``final_exact``), the one the answer is written under?
    ``focus_union_exact``: the sections of all its well-formed focuses together are the ideal
    ones (a stepwise answer focuses each step's section in turn). :func:`summarize` judges
    the last one."""
    ev = next((e for e in result.events), None)
    applied = ev.applied if ev is not None else None
    want = sample.directive
    mode_ok = applied is not None and ev.kind == "directive" and applied.mode is want.mode
    covered = None
    if mode_ok and want.mode is Mode.FOCUS:
        covered = set(want.sections()) <= set(applied.sections())
    last = result.events[-1] if result.events else None
    return {"declared": ev.text if ev else None, "mode_ok": bool(mode_ok),
            "exact": bool(applied == want and ev.kind == "directive") if ev else False,
            "covers": covered,
            # the declaration in force at the end: the one a lead-in format's answer is
            # written under (``[[local]] lead [[global]][[focus S3]] value``)
            "final": last.text if last else None,
            "final_exact": bool(last.applied == want and last.kind == "directive")
            if last else False,
            "focus_union_exact": want.mode is Mode.FOCUS and {
                k for e in result.events if e.ok and e.applied.mode is Mode.FOCUS
                for k in e.applied.sections()} == set(want.sections())}


#: the engines a cell can run on: the reference HF engine (model.generate + hooks; records the
#: evidence recall of every step) or :class:`dac.engines.fast.FastDecoder` (static cache,
#: FlexAttention, CUDA graphs on a GPU; the same results on CPU, tested; no recall)
ENGINES = ("hf", "fast")


def run_cell(model: Any, tok: Any, samples: list[Any], policy: str, cfg: PlanConfig,
             max_new: int, batch: int, prompt: dict[str, Any] | None = None,
             bound_sections: bool = True, engine: str = "hf") -> list[dict[str, Any]]:
    """``prompt``: :func:`dac.protocol.build_prompt` options the model was trained with;
    ``bound_sections``: the engine's section bound (:mod:`dac.protocol.constraint`), recorded
    in each record (records written before the bound existed lack the key: unbounded);
    ``engine``: one of :data:`ENGINES`."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    tok.padding_side = "left"
    # the bound applies to policies that read directives (dac), not to the baselines
    bounded = bound_sections and get_policy(policy).reads_directives
    all_layouts = [s.layout(tok, **(prompt or {})) for s in samples]
    decoders: dict[int, Any] = {}  # fast engine: one decoder per batch size, reused
    width = max((lay.prompt_len for lay in all_layouts), default=0) + max_new
    out = []
    for i in range(0, len(samples), batch):
        chunk = samples[i:i + batch]
        layouts = all_layouts[i:i + batch]
        if engine == "fast":
            from ..engines.fast import FastDecoder

            dec = decoders.get(len(chunk))
            if dec is None:
                dec = decoders[len(chunk)] = FastDecoder(
                    model, batch_size=len(chunk), max_len=width, policy=policy, config=cfg)
            res = dec.generate(tok, layouts, max_new_tokens=max_new,
                               bound_sections=bound_sections)
        else:
            evidence = [s.evidence_spans(lay) for s, lay in zip(chunk, layouts)]
            res = generate(model, tok, layouts, policy=policy, config=cfg,
                           max_new_tokens=max_new, evidence=evidence,
                           bound_sections=bound_sections)
        for s, r in zip(chunk, res):
            recalls = [st.recall for st in r.steps if st.recall is not None]
            out.append({"id": s.id, "task": s.task, "family": s.family, "length": s.length,
                        "policy": policy, "score": score(s.task, r.answer, s),
                        "answer": r.answer[:120], "fraction": r.fraction,
                        "read_per_step": r.kv_read / max(1, len(r.steps)),
                        "recall": sum(recalls) / len(recalls) if recalls else None,
                        "bound_sections": bounded, "engine": engine, **adherence(s, r)})
    return out


def final_mode_ok(record: dict[str, Any]) -> bool:
    """Does the record's last declaration name its task's ideal mode (focus for retrieval and
    multi-region, global for aggregation, local for tail tasks)? Its sections are judged by
    ``final_exact``. Records from before ``final`` existed fall back to the first declaration."""
    if "final" not in record:
        return bool(record["mode_ok"])
    text = record["final"] or ""
    if not (text.startswith("[[") and text.endswith("]]")):
        return False
    try:
        mode = parse_directive(text[2:-2]).mode
    except DirectiveError:
        return False
    return mode is directive_for(record["family"], [1]).mode


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (family, length, policy): accuracy, KV read, and adherence judged on the declaration
    in force at the end of the output, the one the answer is written under (a lead-in format,
    ``[[local]] lead [[global]][[focus S3]] value``, declares three times; most outputs once).
    ``exact_first``: the first declaration is the ideal one; ``exact_union`` (focus tasks):
    all focuses together name the ideal sections. ``bound_sections``: whether the cell's
    answers were decoded with the section bound (``"mixed"`` if its records differ; a record
    without the key predates the bound)."""
    cells: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        cells[(r["family"], r["length"], r["policy"].split(":")[0])].append(r)
    rows = []
    for (fam, length, pol), rs in sorted(cells.items()):
        bound = {bool(r.get("bound_sections", False)) for r in rs}
        rows.append({"family": fam, "length": length, "policy": pol, "n": len(rs),
                     "bound_sections": bound.pop() if len(bound) == 1 else "mixed",
                     "accuracy": round(sum(r["score"] for r in rs) / len(rs), 4),
                     "kv_fraction": round(sum(r["fraction"] for r in rs) / len(rs), 4),
                     "mode_adherence": round(sum(final_mode_ok(r) for r in rs) / len(rs), 4),
                     "exact_directive": round(sum(bool(r.get("final_exact", r["exact"]))
                                                  for r in rs) / len(rs), 4),
                     **({"exact_first": round(sum(bool(r["exact"]) for r in rs)
                                              / len(rs), 4)}
                        if all("final_exact" in r for r in rs) else {}),
                     **({"exact_union": round(sum(bool(r["focus_union_exact"]) for r in rs)
                                              / len(rs), 4)}
                        if fam in ("retrieval", "multi")
                        and all("focus_union_exact" in r for r in rs) else {})})
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
    ``"hf"`` (the reference engine) or ``"fast"`` (:class:`dac.engines.fast.FastDecoder`)."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    from ..models import load

    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tok = load(model_dir, dtype=torch.bfloat16 if dev == "cuda" else torch.float32,
                      device=dev)
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
            max_new = TASKS[task].max_new_tokens
            cell = {}
            for pol in ("full", "dac"):
                cell[pol] = run_cell(model, tok, samples, pol, cfg, max_new, batch, prompt,
                                     bound_sections, engine)
                records += cell[pol]
            if same_cost and TASKS[task].family in ("retrieval", "multi"):
                budget = sum(r["read_per_step"] for r in cell["dac"]) / len(cell["dac"])
                for pol in (f"streaming:window={max(cfg.block_size, int(budget - cfg.sink_tokens))}",
                            f"quest:budget_tokens={max(cfg.block_size, int(budget))},dense_layers=0"):
                    records += run_cell(model, tok, samples, pol, cfg, max_new, batch, prompt,
                                        bound_sections, engine)
            acc = {p: round(sum(r["score"] for r in rs) / len(rs), 3) for p, rs in cell.items()}
            log(json.dumps({"event": "cell", "task": task, "length": length, "acc": acc,
                            "dac_fraction": round(sum(r["fraction"] for r in cell["dac"])
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
                   help="hf: the reference engine (records evidence recall); fast: the "
                        "static-cache FlexAttention decoder with CUDA graphs on a GPU")
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
