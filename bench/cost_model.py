"""The paper's roofline projection of DA's decode time, beside the same responses measured.

    PYTHONUNBUFFERED=1 PYTHONPATH=src python3 bench/cost_model.py --shape gemma-4-31b \\
        --preset paper --batches 1,4,max --out $OUT
    PYTHONPATH=src python3 bench/cost_model.py --shape qwen-3.6-27b --run runs/eval-paper ...

A *trace* is one response: its context length and, per decode step, the tokens its global
layers attend. ``--preset paper`` takes the paper's Table 5 (per arm, a response's decode steps
``D`` and attended tokens ``A``, macro-averaged): the vanilla response starts at the context
``A / D - D / 2`` and attends everything as it grows; the DA response grows from the same
context and attends ``A / D`` tokens at each step. ``--run DIR`` takes every response of a
``dac eval`` run instead (``kv.per_step`` of its records, per arm).

Each arm's traces are replayed on a random-weight model of the shape (the fast engine, CUDA
graphs, one process, one cache; every row of the batch follows the trace): at each replayed
step the plan keeps the sink block and the most recent blocks, as many as the step attended.
Up to ``--max-steps`` steps per trace are replayed, evenly spaced, and the response's time is
their mean GPU time times its decode steps. The projection is :func:`dac.roofline.decode_time`
with the shape's own constants (its parameters, global KV bytes per token, local bytes per
step) on the H200's nominal figures; the paper's own B200 projection is printed beside it.
The roofline charges no weight reads (it assumes a batch large enough to amortize them), so
the measured ratio should approach the projected one as the batch grows.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from dac.roofline import HARDWARE, PAPER_TRACES, ModelCosts, decode_time  # noqa: E402

T0 = time.time()


def log(*a: Any) -> None:
    print(f"[{time.time() - T0:7.1f}s]", *a, flush=True)


@dataclass(frozen=True)
class Trace:
    """One response: the context it starts from and the tokens attended at each step."""

    context: int
    per_step: tuple[float, ...]

    @property
    def steps(self) -> int:
        return len(self.per_step)

    @property
    def attended(self) -> float:
        return float(sum(self.per_step))


def preset_traces(shape: str) -> dict[str, list[Trace]]:
    """The paper's Table 5 row of ``shape`` as one trace per arm (module docstring)."""
    if shape not in PAPER_TRACES:
        raise SystemExit(f"no paper preset for {shape}; presets: {', '.join(PAPER_TRACES)}")
    (dv, av), (dd, ad) = PAPER_TRACES[shape]["vanilla"], PAPER_TRACES[shape]["da"]
    start = int(round(av / dv - dv / 2))
    return {"vanilla": [Trace(start, tuple(float(start + i + 1) for i in range(int(dv))))],
            "da": [Trace(start, tuple(min(ad / dd, start + i + 1) for i in range(int(dd))))]}


def run_traces(run_dir: Path) -> dict[str, list[Trace]]:
    """Every response of a ``dac eval`` run, per arm (records with a per-step KV trace)."""
    from dac.eval.paper_report import load_records

    out: dict[str, list[Trace]] = {}
    for r in load_records(run_dir):
        per = (r.get("kv") or {}).get("per_step") or []
        if per:
            arm = r.get("arm") or r["policy"]
            out.setdefault(arm, []).append(Trace(int(r["prompt_tokens"]),
                                                 tuple(float(x) for x in per)))
    if not out:
        raise SystemExit(f"{run_dir}: no scored records with a per-step KV trace")
    return out


def kept_blocks(attended: float, length: int, block_size: int) -> list[int]:
    """The sink block and the most recent blocks: ``ceil(attended / block_size)`` of the
    ``ceil(length / block_size)`` blocks (the current one always among them)."""
    nb = -(-length // block_size)
    n = max(1, min(nb, math.ceil(attended / block_size)))
    return [nb - 1] if n == 1 else [0, *range(nb - n + 1, nb)]


def sampled(n: int, k: int) -> list[int]:
    """``min(n, k)`` step indices spread evenly over ``range(n)``."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)}) if k > 1 else [0]


def replay(dec: Any, trace: Trace, batch: int, block_size: int, max_steps: int,
           warmup: int = 2) -> dict[str, float]:
    """Replay ``trace`` on every row of ``dec``: mean GPU (CUDA) or wall (CPU) ms per step
    over the sampled steps, and the response's time (that mean times its steps)."""
    cuda = next(dec.model.parameters()).is_cuda
    idx = sampled(trace.steps, max_steps)
    times = []
    for j, i in enumerate([idx[0]] * warmup + idx):
        length = trace.context + i + 1
        dec.lengths = [length] * batch
        dec.set_plan([kept_blocks(trace.per_step[i], length, block_size)] * batch)
        dec.set_tokens([5] * batch)
        if cuda:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            dec.run_step()
            b.record()
            b.synchronize()
            ms = a.elapsed_time(b)
        else:
            t = time.perf_counter()
            dec.run_step()
            ms = (time.perf_counter() - t) * 1e3
        if j >= warmup:
            times.append(ms)
    step_ms = statistics.mean(times)
    return {"step_ms": step_ms, "response_ms": step_ms * trace.steps}


def measure(model: Any, traces: dict[str, list[Trace]], batch: int, *, block_size: int = 64,
            max_steps: int = 32, max_responses: int = 8) -> dict[str, Any]:
    """Per arm, the mean decode time of its responses replayed at ``batch`` (one decoder, one
    cache for every arm); each arm's ratio to the reference arm (vanilla, else the first)."""
    from dac.engines.fast import FastDecoder
    from dac.planning.blocks import PlanConfig

    picked = {a: ts[:max_responses] for a, ts in traces.items()}
    max_len = max(t.context + t.steps for ts in picked.values() for t in ts) + block_size
    dec = FastDecoder(model, batch_size=batch, max_len=max_len, policy="full",
                      config=PlanConfig(block_size=block_size), account=False)
    dec.fill_random([max(t.context for ts in picked.values() for t in ts)] * batch)
    arms: dict[str, Any] = {}
    for arm, ts in picked.items():
        runs = [replay(dec, t, batch, block_size, max_steps) for t in ts]
        arms[arm] = {"responses": len(ts),
                     "decode_steps": statistics.mean(t.steps for t in ts),
                     "attended_tokens": statistics.mean(t.attended for t in ts),
                     "step_ms": statistics.mean(r["step_ms"] for r in runs),
                     "response_ms": statistics.mean(r["response_ms"] for r in runs)}
    ref = "vanilla" if "vanilla" in arms else next(iter(arms))
    for m in arms.values():
        m["measured_ratio"] = m["response_ms"] / arms[ref]["response_ms"]
    del dec
    return {"batch": batch, "reference": ref, "arms": arms}


def project(costs: ModelCosts, arms: dict[str, Any], ref: str,
            hardware: str = "h200") -> dict[str, Any]:
    """The roofline's time per arm (the arm's mean steps and attended tokens) and its ratio."""
    out = {}
    base = decode_time(costs, arms[ref]["decode_steps"], arms[ref]["attended_tokens"], hardware)
    for arm, m in arms.items():
        t = decode_time(costs, m["decode_steps"], m["attended_tokens"], hardware)
        out[arm] = {**{k: round(v * 1e3, 3) for k, v in
                       {"matmul_ms": t.matmul_s, "global_ms": t.global_s, "local_ms": t.local_s,
                        "total_ms": t.total_s}.items()},
                    "ratio": round(t.total_s / base.total_s, 4)}
    return out


def main() -> None:
    from paper_shapes import SHAPES, bandwidth, build, max_batch, weight_bytes

    from dac.costs import cost_constants
    from dac.roofline import PAPER_MODELS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=list(SHAPES), required=True)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", choices=["paper"], help="the paper's Table 5 for this shape")
    src.add_argument("--run", type=Path, help="a dac eval run folder (its per-step traces)")
    ap.add_argument("--batches", default="1,4,max")
    ap.add_argument("--max-steps", type=int, default=32)
    ap.add_argument("--max-responses", type=int, default=8)
    ap.add_argument("--out", default=os.environ.get("OUT", "bench/results"))
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/cost_model.py measures on a GPU (none found)")
    traces = preset_traces(args.shape) if args.preset else run_traces(args.run)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"cost_model_{args.shape}.json"
    ctx = max(t.context + t.steps for ts in traces.values() for t in ts)
    model, cfg = build(args.shape, ctx + 1024)
    consts = cost_constants(cfg)
    params = sum(p.numel() for p in model.parameters())
    costs = ModelCosts(args.shape, float(params), consts["global_kv_bytes_per_token"],
                       consts["local_bytes_per_step"])
    results: dict[str, Any] = {
        "shape": args.shape, "source": "paper Table 5" if args.preset else str(args.run),
        "env": {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__},
        "bandwidth_TBps": round(bandwidth() / 1e12, 3),
        "weights_GB": round(weight_bytes(model) / 1e9, 3), "params": params,
        "constants": consts, "hardware": HARDWARE["h200"].__dict__,
        "traces": {a: [{"context": t.context, "steps": t.steps, "attended": t.attended}
                       for t in ts] for a, ts in traces.items()},
        "runs": [], "failed": []}
    if args.shape in PAPER_MODELS and args.preset:
        pm = PAPER_MODELS[args.shape]
        base = decode_time(pm, *PAPER_TRACES[args.shape]["vanilla"], "b200").total_s
        results["paper_projection_b200"] = {
            a: round(decode_time(pm, *PAPER_TRACES[args.shape][a], "b200").total_s / base, 4)
            for a in PAPER_TRACES[args.shape]}
    log(f"{args.shape}: {params / 1e9:.1f} B parameters, traces "
        + json.dumps(results["traces"])[:300])

    def dump() -> None:
        path.write_text(json.dumps(results, indent=1))

    dump()
    for b in args.batches.split(","):
        import gc

        gc.collect()
        torch.cuda.empty_cache()
        batch = max_batch(consts, ctx, torch.cuda.mem_get_info()[0]) if b == "max" else int(b)
        while True:
            try:
                res = measure(model, traces, batch, max_steps=args.max_steps,
                              max_responses=args.max_responses)
                break
            except torch.OutOfMemoryError as e:
                gc.collect()
                torch.cuda.empty_cache()
                if b != "max" or batch <= 1:
                    results["failed"].append({"batch": batch, "error": str(e)[:500]})
                    res = None
                    break
                batch = max(1, batch * 3 // 4)
            except Exception as e:
                results["failed"].append({"batch": batch,
                                          "error": f"{type(e).__name__}: {e}"[:1000]})
                traceback.print_exc()
                res = None
                break
        if res is not None:
            res["batch_kind"] = b
            res["projected"] = project(costs, res["arms"], res["reference"])
            results["runs"].append(res)
            log(json.dumps(res))
        dump()
    results["wall_s"] = round(time.time() - T0, 1)
    dump()


if __name__ == "__main__":
    main()
