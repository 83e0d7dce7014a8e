"""Decode speed on the paper's model shapes, at serving batch sizes (one GPU call per shape).

    PYTHONUNBUFFERED=1 PYTHONPATH=src python3 bench/paper_shapes.py --shape gemma-4-31b \\
        --contexts 32768,131072 --batches 1,4,max --out $OUT

Random-weight bf16 models built on the GPU from the published text configs
(``tests/fixtures/configs/``), or the 8B-shaped Llama. For each context and batch, in one
process on one cache, interleaved, medians over steps and repetitions:

* ``full``: every block;
* ``dac-focus``: a scripted ``[[focus S11-S19]]`` over a 100-section context (9% kept, plus the
  sink, the question window and the response);
* ``dac-local``: a scripted ``[[local]]`` (sink, question window and response only);
* ``streaming``: sink + recent window;
* ``quest``: Quest at a 10% budget (when the engine can share the cache with it).

Each step runs the fast engine's own loop on scripted tokens (:func:`run_config`). Per step:
GPU time (CUDA events around the graph replay), wall time from one sampled-token sync to the
next, the host time the device waits for before each launch (``host_us``, ``host_share``: the
runtime's parsing and planning, unless the plan made during the previous step was reused,
``planned_ahead``), tokens/s for the batch, and the bytes it must read: weights,
the global layers' KV of the kept blocks, and the fixed read of the sliding-window rings or the
linear-attention states. The bound is those bytes at the bandwidth measured in the same
process (a device-to-device copy); ``of_bound`` is the bound over the measured GPU time, and
``of_bound_speedup`` the measured speed-up over the bound's speed-up, both against ``full``.
A ``profile`` part splits one eager step's kernels into families (matmul, attention, norms
and elementwise, copies) with torch.profiler; ``--compile`` compiles the whole step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from dac.costs import cost_constants  # noqa: E402
from dac.planning.blocks import PlanConfig, tokens_in_blocks  # noqa: E402

T0 = time.time()
CONFIGS = ROOT / "tests" / "fixtures" / "configs"
SHAPES = {"gemma-4-31b": CONFIGS / "gemma-4-31b.json",
          "qwen-3.6-27b": CONFIGS / "qwen-3.6-27b.json", "llama-8b": None}
LLAMA_8B = dict(model_type="llama", hidden_size=4096, intermediate_size=14336,
                num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                vocab_size=128256, rope_theta=500000.0)
POLICIES = {"full": "full", "dac-focus": "dac", "dac-local": "dac", "streaming": "streaming",
            "quest": "quest:budget=0.1"}
DIRECTIVES = {"dac-focus": "[[focus S11-S19]] ", "dac-local": "[[local]] "}


def log(*a: Any) -> None:
    print(f"[{time.time() - T0:7.1f}s]", *a, flush=True)


def build(shape: str, max_pos: int) -> tuple[Any, dict[str, Any]]:
    """A random-weight bf16 model of ``shape`` on the GPU, and its config dict."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if SHAPES[shape] is None:
        cfg_d = dict(LLAMA_8B)
    else:
        cfg_d = json.loads(SHAPES[shape].read_text())
    text = dict(cfg_d.get("text_config") or cfg_d)
    mt = text.pop("model_type")
    text["max_position_embeddings"] = max_pos
    cfg = AutoConfig.for_model(mt, **text)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    model.eval().requires_grad_(False)
    return model, {**text, "model_type": mt}


def bandwidth() -> float:
    """Device-to-device copy bandwidth, bytes/s (read + write counted), median of 10."""
    a = torch.empty(2 << 30, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    ts = []
    for _ in range(12):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        b.copy_(a)
        e.record()
        torch.cuda.synchronize()
        ts.append(s.elapsed_time(e) / 1e3)
    del a, b
    return 2 * (2 << 30) / statistics.median(ts[2:])


def weight_bytes(model: Any) -> int:
    """Bytes a decode step reads of the weights: every parameter, less the input embedding
    (one row per token) unless it is tied to the output head (then it is read whole)."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    emb = model.get_input_embeddings().weight
    tied = model.get_output_embeddings().weight.data_ptr() == emb.data_ptr()
    return total if tied else total - emb.numel() * emb.element_size()


def layout(ctx: int, n_sections: int = 100) -> Any:
    from dac.protocol.context import PromptLayout

    step = (ctx - 600) // n_sections
    secs = [(64 + i * step, 64 + (i + 1) * step) for i in range(n_sections)]
    return PromptLayout.plain(ctx, secs, question=(secs[-1][1], ctx))


def run_config(model: Any, consts: dict[str, Any], wbytes: int, bw: float, ctx: int,
               batch: int, steps: int, reps: int, compile_model: bool = False,
               policies: list[str] | None = None) -> dict[str, Any]:
    """Every policy at one context and batch, interleaved, on one cache (module docstring).

    Each step runs the fast engine's own loop (``FastDecoder.generate``): the runtime parses
    the step's input tokens and plans, the plan made during the previous step is reused when
    its inputs held, the forward is launched, the next step is planned while it runs, then
    the sampled tokens are read (the sync a real loop needs). The tokens are scripted: the
    policy's directive, then filler text. On a CPU (the tests) GPU time is the forward's wall
    time. ``policies``: a subset of :data:`POLICIES` (``full`` is always run: the baseline)."""
    from dac.engines.fast import FastDecoder
    from dac.models import tiny_tokenizer
    from dac.planning import get_policy
    from dac.runtime import BatchRuntime

    cuda = next(model.parameters()).is_cuda
    cfg = PlanConfig(block_size=64)
    tok = tiny_tokenizer()
    filler = tok("The answer is in the river section, number 4711. ",
                 add_special_tokens=False)["input_ids"]
    scripts = {p: tok(DIRECTIVES.get(p, ""), add_special_tokens=False)["input_ids"]
               for p in POLICIES}
    skip = 3 + max(len(v) for v in scripts.values())  # warm-up, and the directive complete
    max_len = ctx + skip + steps + 128
    t0 = time.time()
    shared = FastDecoder(model, batch_size=batch, max_len=max_len, policy="full", config=cfg,
                         account=False, compile_model=compile_model)
    names = ["full"] + [p for p in (policies or POLICIES) if p != "full"]
    decoders = {name: shared for name in names if name != "quest"}
    if "quest" in names:
        try:
            decoders["quest"] = FastDecoder(model, batch_size=batch, max_len=max_len,
                                            policy=POLICIES["quest"], config=cfg, account=False,
                                            compile_model=compile_model, kv=(shared.k, shared.v))
        except (TypeError, ValueError, RuntimeError) as e:  # e.g. a hybrid's caches not shared
            log(f"quest skipped: {str(e)[:200]}")
    log(f"decoders + graphs for ctx {ctx} batch {batch} in {time.time() - t0:.1f}s")
    for dec in set(decoders.values()):
        dec.fill_random([ctx] * batch)
    lay = layout(ctx)
    rec: dict[str, dict[str, list[float]]] = {p: defaultdict(list) for p in decoders}
    kept: dict[str, list[float]] = {p: [] for p in decoders}
    plans_seen: dict[str, list[tuple[list[list[int]], list[int]]]] = defaultdict(list)

    def run(name: str) -> None:
        dec = decoders[name]
        if name != "quest":  # the shared decoder: switch its policy
            dec.policy = get_policy(POLICIES[name])
        script = scripts[name] + filler * (1 + (skip + steps) // len(filler))
        rt = BatchRuntime([lay] * batch, tok, set(), dec.policy, cfg, record_blocks=False)
        rt.start([ctx] * batch)
        toks = [script[0]] * batch
        t_sync = time.perf_counter()
        for i in range(skip + steps):
            t_a = time.perf_counter()
            plans = rt.advance(toks)
            dec.lengths = list(rt.lengths)
            if rt.reused:
                dec.commit_plan()
            else:
                dec.set_plan(plans)
            dec.set_tokens(toks)
            if cuda:
                ea, eb = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                ea.record()
            t_f = time.perf_counter()
            logits = dec.run_step()
            if cuda:
                eb.record()
            t_g = time.perf_counter()
            if max(rt.lengths) < dec.step.cache_len:
                dec.stage_plan(*rt.plan_ahead())  # hidden behind the forward on a GPU
            rt.record()  # accounted from the plans while the forward runs, as generate does
            logits.argmax(-1).tolist()  # the sync a real loop needs to sample
            t_s = time.perf_counter()
            toks = [script[i + 1]] * batch
            if i >= skip:
                r = rec[name]
                r["gpu_us"].append(ea.elapsed_time(eb) * 1e3 if cuda else (t_g - t_f) * 1e6)
                r["step_us"].append((t_s - t_sync) * 1e6)
                # the device waits from the last sync to this launch: bookkeeping, parsing,
                # planning (unless made ahead), the plan and token uploads
                r["host_us"].append((t_f - t_sync) * 1e6)
                r["reused"].append(float(rt.reused))
                if name != "quest":  # counted after the timed steps
                    plans_seen[name].append((rt.plans, list(rt.lengths)))
            t_sync = t_s

    for _ in range(reps):
        for name in decoders:
            run(name)
    for name, seen in plans_seen.items():
        kept[name] = [statistics.mean(tokens_in_blocks(bl, n, cfg.block_size)
                                      for bl, n in zip(plans, lengths))
                      for plans, lengths in seen]
    if "quest" in decoders:  # its dense layers read everything, the others its budget
        qp = get_policy(POLICIES["quest"])
        g = max(1, consts["global_layers"])
        dense = min(g, qp.dense_layers)
        budget = min(ctx, -(-int(qp.budget * ctx) // cfg.block_size) * cfg.block_size)
        kept["quest"] = [(dense * ctx + (g - dense) * budget) / g]
    kv_tok = consts["global_kv_bytes_per_token"]
    local = consts["local_bytes_per_step"]
    res: dict[str, Any] = {"context": ctx, "batch": batch, "policies": {}}
    for name in decoders:
        m = {k: statistics.median(v) for k, v in rec[name].items() if k != "reused"}
        toks = statistics.mean(kept[name])
        parts = {"weights_GB": wbytes / 1e9, "global_kv_GB": batch * toks * kv_tok / 1e9,
                 "local_GB": batch * local / 1e9}
        total = sum(parts.values()) * 1e9
        bound_us = total / bw * 1e6
        res["policies"][name] = {
            "gpu_us": round(m["gpu_us"], 1), "step_us": round(m["step_us"], 1),
            "tokens_per_s": round(batch / (m["step_us"] * 1e-6), 1),
            "kept_fraction": round(toks / ctx, 4), **{k: round(v, 3) for k, v in parts.items()},
            "bound_us": round(bound_us, 1), "of_bound": round(bound_us / m["gpu_us"], 3),
            "host_us": round(m["host_us"], 1), "host_share": round(m["host_us"] / m["step_us"], 4),
            "planned_ahead": round(statistics.mean(rec[name]["reused"]), 3)}
    full = res["policies"]["full"]
    for p in res["policies"].values():
        p["speedup"] = round(full["gpu_us"] / p["gpu_us"], 3)
        p["bound_speedup"] = round(full["bound_us"] / p["bound_us"], 3)
        p["of_bound_speedup"] = round(p["speedup"] / p["bound_speedup"], 3)
    decoders.clear()
    del shared, dec
    import gc

    gc.collect()  # CUDA graphs and their pools are freed only with their decoder
    torch.cuda.empty_cache()
    return res


def max_batch(consts: dict[str, Any], ctx: int, free: int) -> int:
    """The largest batch whose caches fit in ``free`` bytes (less a 6 GB margin)."""
    per_seq = ctx * consts["global_kv_bytes_per_token"] + consts["local_bytes_per_step"]
    return max(1, int((free - 6e9) // per_seq))


def profile_step(model: Any, ctx: int) -> dict[str, Any]:
    """Kernel families of one eager decode step (no CUDA graph), GPU microseconds."""
    from torch.profiler import ProfilerActivity, profile

    from dac.engines.fast import FastDecoder

    dec = FastDecoder(model, batch_size=1, max_len=ctx + 64, policy="full",
                      config=PlanConfig(block_size=64), account=False, cuda_graph=False)
    dec.fill_random([ctx])
    dec.lengths = [ctx]
    for _ in range(3):
        dec.lengths[0] += 1
        dec.set_plan([list(range(-(-dec.lengths[0] // 64)))])
        dec.set_tokens([5])
        dec.run_step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        dec.lengths[0] += 1
        dec.set_plan([list(range(-(-dec.lengths[0] // 64)))])
        dec.set_tokens([5])
        dec.run_step()
        torch.cuda.synchronize()
    fam: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for ev in prof.key_averages():
        t = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0)
        if not t or ev.key.startswith("cuda"):
            continue
        k = ev.key.lower()
        f = ("matmul" if any(s in k for s in ("gemm", "gemv", "matmul", "cutlass", "nvjet"))
             else "attention" if any(s in k for s in ("flex", "attention", "fmha", "sdpa",
                                                        "flash"))
             else "copy" if any(s in k for s in ("copy", "memcpy", "index", "scatter"))
             else "other (norms, rotary, elementwise)")
        fam[f] += t
        count[f] += ev.count
    del dec
    torch.cuda.empty_cache()
    return {"context": ctx, "gpu_us": {k: round(v, 1) for k, v in fam.items()},
            "kernels": dict(count)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=list(SHAPES), required=True)
    ap.add_argument("--contexts", default="32768,131072")
    ap.add_argument("--batches", default="1,4,max")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="also profile one eager step")
    ap.add_argument("--compile", action="store_true",
                    help="compile the whole step (fuses the per-layer norms, rotary, ...)")
    ap.add_argument("--policies", default=",".join(POLICIES),
                    help="a subset of " + ",".join(POLICIES) + " (full always runs)")
    ap.add_argument("--out", default=os.environ.get("OUT", "bench/results"))
    args = ap.parse_args()
    policies = args.policies.split(",")
    unknown = sorted(set(policies) - set(POLICIES))
    if unknown:
        ap.error(f"unknown policies {unknown}; choose from {', '.join(POLICIES)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"shape": args.shape, "compiled": args.compile, "runs": [],
                               "failed": []}
    path = out / f"paper_shapes_{args.shape}{'_compiled' if args.compile else ''}.json"

    def dump() -> None:
        path.write_text(json.dumps(results, indent=1))

    ctxs = [int(c) for c in args.contexts.split(",")]
    results["env"] = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}
    results["bandwidth_TBps"] = round(bandwidth() / 1e12, 3)
    bw = results["bandwidth_TBps"] * 1e12
    t0 = time.time()
    model, cfg = build(args.shape, max(ctxs) + 1024)
    consts = cost_constants(cfg)
    wbytes = weight_bytes(model)
    results.update(constants=consts, weights_GB=round(wbytes / 1e9, 3),
                   build_s=round(time.time() - t0, 1))
    log(f"{args.shape}: {wbytes / 1e9:.1f} GB of weights read per step; {consts}")
    dump()
    if args.profile:
        try:
            results["profile"] = profile_step(model, ctxs[0])
        except Exception as e:
            results["failed"].append({"profile": f"{type(e).__name__}: {e}"[:1000]})
            traceback.print_exc()
        dump()
    for ctx in ctxs:
        for b in args.batches.split(","):
            import gc

            gc.collect()
            torch.cuda.empty_cache()
            free = torch.cuda.mem_get_info()[0]
            batch = max_batch(consts, ctx, free) if b == "max" else int(b)
            try:
                while True:
                    try:
                        res = run_config(model, consts, wbytes, bw, ctx, batch, args.steps,
                                         args.reps, compile_model=args.compile,
                                         policies=policies)
                        break
                    except torch.OutOfMemoryError:
                        if b != "max" or batch <= 1:
                            raise
                        # the estimate leaves out workspaces (the graphs' pools, Quest's
                        # metadata): a quarter fewer rows until it fits
                        gc.collect()
                        torch.cuda.empty_cache()
                        batch = max(1, batch * 3 // 4)
                        log(f"ctx {ctx}: out of memory at max, trying batch {batch}")
                res["batch_kind"] = b
                results["runs"].append(res)
                log(json.dumps(res))
            except Exception as e:
                results["failed"].append({"context": ctx, "batch": batch,
                                          "error": f"{type(e).__name__}: {e}"[:1000]})
                log(f"!! ctx {ctx} batch {batch}: {str(e)[:300]}")
                traceback.print_exc()
                torch.cuda.empty_cache()
            dump()
    results["wall_s"] = round(time.time() - T0, 1)
    dump()


if __name__ == "__main__":
    main()
