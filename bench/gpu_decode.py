"""GPU benchmarks of block-sparse DAC decode (one script, one GPU call).

    PYTHONUNBUFFERED=1 PYTHONPATH=src python3 bench/gpu_decode.py --out $OUT [--quick]

Parts (each guarded: one failing does not lose the others; results go to results.json/.md):

* ``correct``  fast path (compiled FlexAttention, CUDA graphs, bf16) against the CPU reference
  (fp32 gather kernel / the HF engine) on random keep-sets and on a small random Llama.
* ``kernel``   attention-kernel microbenchmark: Llama-3-8B attention shape (32 q heads, 8 KV
  heads, dim 128, bf16), kept fractions 3/10/30/100% of 64-token blocks against dense SDPA
  (cuDNN / flash / efficient), 8K-128K context, batch 1 and 4, GPU time from CUDA-graph replay
  over several KV buffers (so L2 holds none of them), medians of interleaved runs.
* ``e2e``      decode-step latency and tokens/s of a random-weight 8B-shaped Llama at 128K,
  policies full / dac / streaming / quest in the same process, interleaved, medians; the
  Amdahl bound from bytes read (weights + kept KV) at the measured copy bandwidth.
* ``overhead`` host time per step of directive parsing + detokenization + planning + mask
  upload against the decode step at batch 1.
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
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from dac.kernels.flex import KeptBlocks, cache_length, flex_decode  # noqa: E402
from dac.kernels.reference import dense_masked_reference  # noqa: E402
from dac.planning.blocks import PlanConfig, normalize, num_blocks, tokens_in_blocks  # noqa: E402

RESULTS: dict[str, Any] = {}
T0 = time.time()


def log(*a: Any) -> None:
    print(f"[{time.time() - T0:7.1f}s]", *a, flush=True)


OUT_DIR = Path(".")


def dump() -> None:
    (OUT_DIR / "results.json").write_text(json.dumps(RESULTS, indent=1, default=str))


def part(name: str, fn: Callable[..., Any], *args: Any) -> None:
    log(f"== {name}")
    try:
        RESULTS[name] = fn(*args)
    except Exception as e:  # keep the other parts
        RESULTS[name] = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()}
        log(f"!! {name} failed: {e}")
        traceback.print_exc()
    torch.cuda.empty_cache()
    dump()


def graph_time(fn: Callable[[], Any], reps: int = 20, calls_per_graph: int = 1) -> float:
    """Median GPU microseconds per call of ``fn`` captured in a CUDA graph (warmed up)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return replay_time(g, reps) / calls_per_graph


def replay_time(g: Any, reps: int = 20) -> float:
    g.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e3)
    return statistics.median(times)


# ---------------------------------------------------------------------------------- env
def env() -> dict[str, Any]:
    p = torch.cuda.get_device_properties(0)
    n = 1 << 30
    src = torch.empty(n, dtype=torch.uint8, device="cuda")
    src.random_()
    dst = torch.empty_like(src)
    t = graph_time(lambda: dst.copy_(src), reps=10)
    x = src.view(torch.bfloat16)
    t_read = graph_time(lambda: x.sum(dtype=torch.float32), reps=10)
    import transformers
    out = {"gpu": p.name, "sms": p.multi_processor_count, "torch": torch.__version__,
           "transformers": transformers.__version__, "cuda": torch.version.cuda,
           "copy_bandwidth_TBps": round(2 * n / (t * 1e-6) / 1e12, 3),
           "read_bandwidth_TBps": round(n / (t_read * 1e-6) / 1e12, 3)}
    del src, dst, x
    log(out)
    return out


# ----------------------------------------------------------------------------- correct
def correct(quick: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"kernel": [], "engine": {}}
    gen = torch.Generator().manual_seed(0)
    for heads_mode in ("shared", "per_head"):
        for b, lengths, bs in ((1, [5000], 64), (3, [4097, 130, 8191], 64), (2, [3000, 777], 128)):
            hq, hk, d = 32, 8, 128
            n = cache_length(max(lengths), bs)
            q = torch.randn(b, hq, 1, d, generator=gen)
            k = torch.randn(b, hk, n, d, generator=gen)
            v = torch.randn(b, hk, n, d, generator=gen)
            nb = n // bs
            keep = torch.zeros(b, hk, nb, dtype=torch.bool)
            for r, ln in enumerate(lengths):
                for h in range(hk if heads_mode == "per_head" else 1):
                    blk = normalize((torch.rand(nb, generator=gen) < 0.1).nonzero().flatten().tolist(),
                                    ln, bs)
                    keep[r, h, blk] = True
                if heads_mode == "shared":
                    keep[r] = keep[r, 0]
            if heads_mode == "shared":
                mask = KeptBlocks(b, 1, n, bs, device="cuda")
                mask.set_blocks([keep[r, 0].nonzero().flatten().tolist() for r in range(b)], lengths)
            else:
                mask = KeptBlocks(b, hk, n, bs, q_len=hq // hk, device="cuda")
                mask.set_keep(keep.cuda())
                mask.set_lengths(torch.tensor(lengths, dtype=torch.int32, device="cuda"))
            bf = [t.cuda().bfloat16() for t in (q, k, v)]
            got = flex_decode(*bf, mask, None).float().cpu()
            dense = keep.repeat_interleave(bs, -1) & (torch.arange(n)[None, None]
                                                      < torch.tensor(lengths)[:, None, None])
            ref = dense_masked_reference(*[t.float().cpu() for t in bf], dense, None)
            err = ((got - ref).norm() / ref.norm()).item()
            out["kernel"].append({"heads": heads_mode, "batch": b, "lengths": lengths,
                                  "block_size": bs, "rel_err": err, "ok": err < 1e-2})
            log("kernel", out["kernel"][-1])
    out["engine"] = engine_correct(quick)
    return out


def engine_correct(quick: bool) -> dict[str, Any]:
    """Fast decoder (GPU, bf16, graphs) vs the reference HF engine (CPU, fp32), forced tokens."""
    from transformers import LogitsProcessor, LogitsProcessorList

    from dac.engines.fast import FastDecoder
    from dac.engines.hf.generate import batch_inputs
    from dac.engines.hf.session import DACSession
    from dac.models import tiny_model, tiny_tokenizer
    from dac.protocol import build_prompt

    tok = tiny_tokenizer()
    model = tiny_model("llama", vocab_size=len(tok), hidden=512, layers=4, heads=8, kv_heads=2,
                       head_dim=64, max_positions=8192)
    secs = [f"Section {i}: the river, the mountain and the city number {i * 37}. " * 3
            for i in range(40)]
    lays = [build_prompt(tok, secs, "What is the number of the city?"),
            build_prompt(tok, secs[:25], "Which river?")]
    script = ("[[focus S3-S5]] the value is 4711 and the river [[local 128]] then the city "
              "[[focus S20]] number 259 [[global]] done and the mountain is high. ") * 2
    ids = tok(script, add_special_tokens=False)["input_ids"]
    steps = min(len(ids), 64)
    width = max(lay.prompt_len for lay in lays)

    class Force(LogitsProcessor):
        def __call__(self, input_ids, scores):
            scores = scores.clone()
            t = input_ids.shape[1] - width
            scores[:] = float("-inf")
            scores[:, ids[t]] = 0.0
            return scores

    cfg = PlanConfig(block_size=64, window=128, local_window=256)
    res: dict[str, Any] = {"prompt_tokens": [lay.prompt_len for lay in lays], "steps": steps}
    gpu_model = None
    for policy in ("full", "dac", "streaming", "quest:budget=0.2"):
        pin, mask = batch_inputs(lays, 0)
        with DACSession(model, tok, lays, policy, cfg) as s, torch.inference_mode():
            ref = model.generate(input_ids=pin, attention_mask=mask, max_new_tokens=steps,
                                 do_sample=False, output_logits=True, return_dict_in_generate=True,
                                 pad_token_id=0, logits_processor=LogitsProcessorList([Force()]))
            s.finish(ref.sequences[:, pin.shape[1]:].tolist())
        if gpu_model is None:
            import copy
            gpu_model = copy.deepcopy(model).to("cuda", torch.bfloat16)
        dec = FastDecoder(gpu_model, batch_size=2, max_len=width + steps + 64, policy=policy,
                          config=cfg)
        got = dec.generate(tok, lays, max_new_tokens=steps, keep_logits=True,
                           logits_processor=LogitsProcessorList([Force()]))
        errs = [((a - b).norm() / b.norm()).item() for a, b in zip(dec.step_logits, ref.logits)]
        agree = sum((a.argmax(-1) == b.argmax(-1)).sum().item()
                    for a, b in zip(dec.step_logits, ref.logits)) / (2 * len(errs))
        reads_ok = all([st.read for st in r.steps] == [st.read for st in tr.steps]
                       for r, tr in zip(got, s.traces))
        fr = [round(r.fraction, 4) for r in got]
        res[policy] = {"max_rel_err": max(errs), "median_rel_err": statistics.median(errs),
                       "argmax_agree": agree, "same_reads": reads_ok, "fraction": fr,
                       "ref_fraction": [round(tr.fraction, 4) for tr in s.traces],
                       "ok": max(errs) < 2e-2}
        log("engine", policy, res[policy])
        del dec
        if policy == "dac":  # the whole step compiled (fused small kernels), same graph capture
          try:
            dec = FastDecoder(gpu_model, batch_size=2, max_len=width + steps + 64, policy=policy,
                              config=cfg, compile_model=True)
            got = dec.generate(tok, lays, max_new_tokens=steps, keep_logits=True,
                               logits_processor=LogitsProcessorList([Force()]))
            errs = [((a - b).norm() / b.norm()).item() for a, b in zip(dec.step_logits, ref.logits)]
            res["dac (compiled step)"] = {
                "max_rel_err": max(errs), "median_rel_err": statistics.median(errs),
                "argmax_agree": sum((a.argmax(-1) == b.argmax(-1)).sum().item()
                                    for a, b in zip(dec.step_logits, ref.logits)) / (2 * len(errs)),
                "same_reads": all([st.read for st in r.steps] == [st.read for st in tr.steps]
                                  for r, tr in zip(got, s.traces)),
                "ok": max(errs) < 2e-2}
            log("engine", "dac compiled", res["dac (compiled step)"])
            del dec
          except Exception as e:
            res["dac (compiled step) error"] = f"{type(e).__name__}: {e}"[:2000]
            log("engine dac compiled failed", str(e)[:300])
        if policy.startswith("quest"):
            # Quest's choice of blocks is a ranking: bf16 scores may rank near-ties differently
            # from the fp32 reference. In fp32 the GPU path must match it.
            import copy
            m32 = copy.deepcopy(model).to("cuda")
            dec = FastDecoder(m32, batch_size=2, max_len=width + steps + 64, policy=policy,
                              config=cfg)
            got = dec.generate(tok, lays, max_new_tokens=steps, keep_logits=True,
                               logits_processor=LogitsProcessorList([Force()]))
            reads_ok = all([st.read for st in r.steps] == [st.read for st in tr.steps]
                           for r, tr in zip(got, s.traces))
            errs = [((a - b).norm() / b.norm()).item() for a, b in zip(dec.step_logits, ref.logits)]
            res[policy + " (fp32)"] = {"max_rel_err": max(errs), "median_rel_err": statistics.median(errs),
                                       "argmax_agree": sum((a.argmax(-1) == b.argmax(-1)).sum().item()
                                                           for a, b in zip(dec.step_logits, ref.logits))
                                       / (2 * len(errs)), "same_reads": reads_ok, "ok": max(errs) < 5e-3}
            log("engine", policy, "fp32", res[policy + " (fp32)"])
            del dec, m32
    return res


# -------------------------------------------------------------------------------- tune
def tune(ctx: int, batches: list[int], reps: int) -> dict[str, Any]:
    """Pick the compiled kernel's mask_mod and (num_stages, num_warps) on this GPU: geometric
    mean of the all-blocks and 10% times at ``ctx``, batch 1 and 4. Sets the module globals."""
    from dac.kernels import flex

    hq, hk, d, bs = 32, 8, 128, 64
    variants = [(m, st, w) for m in ("length", "keep")
                for st, w in ((1, 2), (3, 2), (2, 4), (3, 4), (4, 4))]
    rows = []
    gen = torch.Generator().manual_seed(1)
    cases = []
    for b in batches:
        ks = [torch.randn(b, hk, ctx, d, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
        vs = [torch.randn(b, hk, ctx, d, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
        qs = [torch.randn(b, hq, 1, d, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
        nb = ctx // bs
        sets = {1.0: [list(range(nb))] * b,
                0.1: [sorted(set(torch.randperm(nb - 1, generator=gen)[: nb // 10].tolist()) | {nb - 1})
                      for _ in range(b)]}
        cases.append((b, ks, vs, qs, sets))
    scores: dict[tuple[str, int, int], float] = {}
    for m, st, w in variants:
        flex.KERNEL_MASK, flex.KERNEL_OPTIONS = m, {"num_stages": st, "num_warps": w}
        logt = []
        try:
            for b, ks, vs, qs, sets in cases:
                mask = KeptBlocks(b, 1, ctx, bs, device="cuda")
                mask.set_blocks(sets[1.0], [ctx] * b)
                g_us = {}
                def call() -> None:
                    for i in range(2):
                        flex_decode(qs[i], ks[i], vs[i], mask, None)
                s = torch.cuda.Stream()
                s.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s):
                    call()
                torch.cuda.current_stream().wait_stream(s)
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):
                    call()
                for _ in range(reps):
                    for f in (1.0, 0.1):
                        mask.set_blocks(sets[f], [ctx] * b)
                        torch.cuda.synchronize()
                        g_us.setdefault(f, []).append(replay_time(g, 10) / 2)
                for f, v in g_us.items():
                    us = statistics.median(v)
                    rows.append({"mask": m, "num_stages": st, "num_warps": w, "batch": b,
                                 "fraction": f, "us": round(us, 2)})
                    logt.append(math.log(us))
            scores[(m, st, w)] = math.exp(sum(logt) / len(logt))
            log("tune", m, st, w, round(scores[(m, st, w)], 2), [r["us"] for r in rows[-4:]])
        except Exception as e:
            log(f"tune variant {m} {st} {w} failed: {str(e).splitlines()[0][:160]}")
    best = min(scores, key=scores.get)
    flex.KERNEL_MASK, flex.KERNEL_OPTIONS = best[0], {"num_stages": best[1], "num_warps": best[2]}
    default = scores.get(("length", 1, 2))
    log("tune: chosen", best, "geo-mean us", round(scores[best], 2), "default", default)
    return {"context": ctx, "rows": rows, "chosen": {"mask": best[0], "num_stages": best[1],
                                                      "num_warps": best[2]},
            "geomean_us": {f"{k[0]}/{k[1]}/{k[2]}": round(v, 2) for k, v in scores.items()}}


# ------------------------------------------------------------------------------ kernel
def kernel(contexts: list[int], batches: list[int], fractions: list[float], reps: int
           ) -> dict[str, Any]:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    import torch.nn.functional as F

    hq, hk, d, bs = 32, 8, 128, 64
    rows = []
    gen = torch.Generator().manual_seed(0)
    for ctx in contexts:
        for b in batches:
            buf_bytes = 2 * b * hk * ctx * d * 2
            nbuf = max(2, min(8, math.ceil((1 << 29) / buf_bytes)))
            ks = [torch.randn(b, hk, ctx, d, device="cuda", dtype=torch.bfloat16) for _ in range(nbuf)]
            vs = [torch.randn(b, hk, ctx, d, device="cuda", dtype=torch.bfloat16) for _ in range(nbuf)]
            qs = [torch.randn(b, hq, 1, d, device="cuda", dtype=torch.bfloat16) for _ in range(nbuf)]
            mask = KeptBlocks(b, 1, ctx, bs, device="cuda")
            nb = ctx // bs
            sets = {}
            for f in fractions:
                kept = []
                for _ in range(b):
                    k = max(1, round(f * nb))
                    pick = torch.randperm(nb - 1, generator=gen)[: k - 1].tolist()
                    kept.append(sorted(set(pick) | {nb - 1}))
                sets[f] = kept
            outs = [torch.empty(b, 1, hq, d, device="cuda", dtype=torch.bfloat16) for _ in range(nbuf)]

            def flex_all() -> None:
                for i in range(nbuf):
                    outs[i].copy_(flex_decode(qs[i], ks[i], vs[i], mask, None))

            mask.set_blocks(sets[fractions[0]], [ctx] * b)
            t0 = time.time()
            flex_all()  # compile
            torch.cuda.synchronize()
            compile_s = time.time() - t0
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                flex_all()
            torch.cuda.current_stream().wait_stream(s)
            g_flex = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g_flex):
                flex_all()
            dense_graphs = {}
            for name, be in (("sdpa_cudnn", SDPBackend.CUDNN_ATTENTION),
                             ("sdpa_flash", SDPBackend.FLASH_ATTENTION),
                             ("sdpa_efficient", SDPBackend.EFFICIENT_ATTENTION)):
                def dense(be=be) -> None:
                    with sdpa_kernel([be]):
                        for i in range(nbuf):
                            o = F.scaled_dot_product_attention(qs[i], ks[i], vs[i], enable_gqa=True)
                            outs[i].copy_(o.transpose(1, 2))
                try:
                    dense()
                    torch.cuda.synchronize()
                    s.wait_stream(torch.cuda.current_stream())
                    with torch.cuda.stream(s):
                        dense()
                    torch.cuda.current_stream().wait_stream(s)
                    g = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(g):
                        dense()
                    dense_graphs[name] = g
                except Exception as e:
                    log(f"{name} unavailable at ctx={ctx} b={b}: {str(e).splitlines()[0][:120]}")
            times: dict[str, list[float]] = {}
            for _ in range(reps):  # interleaved: every variant once per round
                for f in fractions:
                    mask.set_blocks(sets[f], [ctx] * b)
                    torch.cuda.synchronize()
                    times.setdefault(f"flex_{f}", []).append(replay_time(g_flex, 10) / nbuf)
                for name, g in dense_graphs.items():
                    times.setdefault(name, []).append(replay_time(g, 10) / nbuf)
            med = {k: statistics.median(v) for k, v in times.items()}
            best_dense = min((v for k, v in med.items() if k.startswith("sdpa")), default=float("nan"))
            full = med[f"flex_{fractions[-1]}"] if fractions[-1] == 1.0 else float("nan")
            for key, us in med.items():
                if key.startswith("flex_"):
                    f = float(key[5:])
                    tokens = sum(tokens_in_blocks(kp, ctx, bs) for kp in sets[f])
                else:
                    f, tokens = 1.0, b * ctx
                gbytes = tokens * hk * d * 2 * 2
                rows.append({"context": ctx, "batch": b, "kernel": "flex" if key.startswith("flex") else key,
                             "fraction": f, "us": round(us, 2), "hbm_TBps": round(gbytes / (us * 1e-6) / 1e12, 3),
                             "speedup_vs_flex_full": round(full / us, 2),
                             "vs_best_dense": round(us / best_dense, 3), "buffers": nbuf,
                             "compile_s": round(compile_s, 1)})
            log(f"kernel ctx={ctx} b={b}", {k: round(v, 1) for k, v in med.items()})
            del ks, vs, qs, outs, g_flex, dense_graphs, mask
            torch.cuda.empty_cache()
    return {"shape": {"q_heads": hq, "kv_heads": hk, "head_dim": d, "block_size": bs,
                      "dtype": "bfloat16"}, "rows": rows}


# --------------------------------------------------------------------------------- e2e
def llama8b(layers: int, max_pos: int) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                      num_hidden_layers=layers, num_attention_heads=32, num_key_value_heads=8,
                      head_dim=128, max_position_embeddings=max_pos, rope_theta=500000.0,
                      tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    cfg._attn_implementation = "sdpa"
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            torch.manual_seed(0)
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(prev)
    return model.eval()


def bench_layout(ctx: int, n_sections: int = 100):
    from dac.protocol.context import PromptLayout

    pre, question = 512, 64
    size = (ctx - pre - question) // n_sections
    secs = [(pre + i * size, pre + (i + 1) * size) for i in range(n_sections)]
    return PromptLayout.plain(ctx, secs, (secs[-1][1], ctx))


def e2e(configs: list[tuple[int, int, int, bool]], steps: int, reps: int, bandwidth: float
        ) -> dict[str, Any]:
    from dac.engines.fast import FastDecoder
    from dac.models import tiny_tokenizer
    from dac.planning import SequenceState, get_policy
    from dac.protocol.detok import IncrementalDetokenizer
    from dac.protocol.parser import StreamingParser

    tok = tiny_tokenizer()
    directive = "[[focus S11-S19]] "
    script = tok(("The answer is in the river section, number 4711, and the mountain and the "
                  "city follow. " + directive) * 8, add_special_tokens=False)["input_ids"]
    out: dict[str, Any] = {"runs": []}
    cfg = PlanConfig(block_size=64)
    def one_config(ctx: int, batch: int, layers: int, compiled: bool) -> None:
            max_len = ctx + steps * 2 + 64
            t0 = time.time()
            model = llama8b(layers, max_len)
            weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
            embed = model.model.embed_tokens.weight
            streamed = weight_bytes - embed.numel() * embed.element_size()  # one row per token read
            log(f"e2e model {layers} layers, {weight_bytes / 1e9:.2f} GB, built in {time.time() - t0:.1f}s")
            lay = bench_layout(ctx)
            policies = {"full": "full", "dac": "dac", "streaming": "streaming", "quest": "quest:budget=0.1"}
            t0 = time.time()
            shared = FastDecoder(model, batch_size=batch, max_len=max_len, policy="full", config=cfg,
                                 compile_model=compiled,
                                 account=False)
            quest = FastDecoder(model, batch_size=batch, max_len=max_len, policy=policies["quest"],
                                compile_model=compiled,
                                config=cfg, account=False, kv=(shared.k, shared.v))
            log(f"e2e decoders + graphs in {time.time() - t0:.1f}s")
            shared.fill_random([ctx] * batch)
            quest.fill_random([ctx] * batch)  # same seed: same cache, also computes Quest bounds
            kv_full_tokens = ctx
            rec: dict[str, dict[str, list[float]]] = {p: {} for p in policies}
            kept: dict[str, list[float]] = {p: [] for p in policies}

            def run(name: str) -> None:
                dec = quest if name == "quest" else shared
                pol = get_policy(policies[name])
                if dec is shared:
                    dec.policy = pol
                parsers = [StreamingParser(lay.num_sections) for _ in range(batch)]
                detoks = [IncrementalDetokenizer(tok) for _ in range(batch)]
                for p in parsers:  # the model declared its focus before the timed steps
                    p.feed(directive, 0)
                dec.lengths = [ctx] * batch
                r = rec[name]
                spec = None
                hits = 0
                for i in range(steps):
                    tokid = script[i % len(script)]
                    t_a = time.perf_counter()
                    for b in range(batch):
                        parsers[b].feed(detoks[b].push([tokid]), i)
                    t_b = time.perf_counter()
                    states = []
                    for b in range(batch):
                        dec.lengths[b] += 1
                        states.append(SequenceState(lay, parsers[b].current, dec.lengths[b], i))
                    keys = [(st.directive, st.length, st.step) for st in states]
                    if spec is not None and spec[0] == keys:  # planned during the last step
                        blocks = spec[1]
                        dec.commit_plan()
                        hits += i >= 2
                    else:
                        blocks = [dec.policy.plan(st, cfg) for st in states]
                        dec.set_plan(blocks)
                    t_c = time.perf_counter()
                    dec.set_tokens([tokid] * batch)
                    t_d = time.perf_counter()
                    ea, eb = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    ea.record()
                    logits = dec.run_step()
                    eb.record()
                    t_s = time.perf_counter()
                    # while the GPU runs: plan the next step, assuming no directive completes
                    nxt = [SequenceState(lay, parsers[b].current, dec.lengths[b] + 1, i + 1)
                           for b in range(batch)]
                    spec = ([(st.directive, st.length, st.step) for st in nxt],
                            [dec.policy.plan(st, cfg) for st in nxt])
                    dec.stage_plan(spec[1], [st.length for st in nxt])
                    t_t = time.perf_counter()
                    logits.argmax(-1).tolist()  # the sync a real loop needs to sample
                    t_e = time.perf_counter()
                    if i < 2:  # warm-up
                        continue
                    r.setdefault("parse_us", []).append((t_b - t_a) * 1e6)
                    r.setdefault("plan_us", []).append((t_c - t_b) * 1e6)
                    r.setdefault("upload_us", []).append((t_d - t_c) * 1e6)
                    r.setdefault("launch_us", []).append((t_s - t_d) * 1e6)
                    r.setdefault("ahead_us", []).append((t_t - t_s) * 1e6)
                    r.setdefault("gpu_us", []).append(ea.elapsed_time(eb) * 1e3)
                    r.setdefault("step_us", []).append((t_e - t_a) * 1e6)
                    if name != "quest":
                        kept[name].append(statistics.mean(
                            tokens_in_blocks(bl, n, cfg.block_size) for bl, n in zip(blocks, dec.lengths)))
                r.setdefault("plan_reused", []).append(hits / max(1, steps - 2))

            for _ in range(reps):
                for name in policies:
                    run(name)
            qp = get_policy(policies["quest"])
            nbq = num_blocks(ctx, cfg.block_size)
            q_tokens = min(ctx, max(1, math.ceil(0.1 * ctx / cfg.block_size)) * cfg.block_size)
            kept["quest"] = [(qp.dense_layers * ctx + (layers - qp.dense_layers) * q_tokens) / layers]
            kv_tok_bytes = layers * 8 * 128 * 2 * 2  # K and V of one token, all layers
            meta = (layers - qp.dense_layers) * 8 * nbq * 128 * 2 * 2  # Quest key bounds read
            res: dict[str, Any] = {"context": ctx, "batch": batch, "layers": layers,
                                   "variant": "compiled step" if compiled else "eager step",
                                   "weights_GB": round(weight_bytes / 1e9, 3), "policies": {}}
            for name in policies:
                m = {k: statistics.median(v) for k, v in rec[name].items()}
                toks = statistics.mean(kept[name])
                bytes_ = streamed + batch * (toks * kv_tok_bytes + (meta if name == "quest" else 0))
                bound_us = bytes_ / bandwidth * 1e6
                res["policies"][name] = {
                    **{k: round(v, 1) for k, v in m.items()},
                    "tokens_per_s": round(batch / (m["step_us"] * 1e-6), 2),
                    "kv_fraction": round(toks / kv_full_tokens, 4),
                    "bytes_GB": round(bytes_ / 1e9, 3), "bound_us": round(bound_us, 1),
                    "roofline_fraction": round(bound_us / m["gpu_us"], 3),
                    "host_share_of_step": round((m["parse_us"] + m["plan_us"] + m["upload_us"]) / m["step_us"], 4),
                    "host_cpu_share_of_step": round((m["parse_us"] + m["plan_us"] + m["upload_us"]
                                                     + m["ahead_us"]) / m["step_us"], 4),
                }
            full = res["policies"]["full"]
            for name, p in res["policies"].items():
                sp = full["gpu_us"] / p["gpu_us"]
                amdahl = full["bytes_GB"] / p["bytes_GB"]
                p["speedup_gpu"] = round(sp, 3)
                p["speedup_step"] = round(full["step_us"] / p["step_us"], 3)
                p["amdahl_speedup"] = round(amdahl, 3)
                p["of_amdahl"] = round(sp / amdahl, 3)
            out["runs"].append(res)
            RESULTS["e2e"] = out  # partial results survive a later failure or timeout
            dump()
            log("e2e", json.dumps(res))
            del shared, quest, model
            torch.cuda.empty_cache()

    for ctx, batch, layers, compiled in configs:
        try:
            one_config(ctx, batch, layers, compiled)
        except Exception as e:  # keep the configurations already measured
            out["runs_failed"] = out.get("runs_failed", []) + [
                {"context": ctx, "batch": batch, "compiled": compiled, "error": f"{type(e).__name__}: {e}"[:2000]}]
            log(f"!! e2e config {ctx} {batch} compiled={compiled} failed: {str(e)[:300]}")
            traceback.print_exc()
            RESULTS["e2e"] = out
            dump()
            torch.cuda.empty_cache()
    return out


def overhead(e2e_res: dict[str, Any]) -> dict[str, Any]:
    """(c): host-side parse + plan + mask upload of the dac policy at batch 1, from the e2e loop."""
    out = []
    for r in e2e_res.get("runs", []):
        if r["batch"] != 1:
            continue
        p = r["policies"]["dac"]
        host = p["parse_us"] + p["plan_us"] + p["upload_us"]
        out.append({"context": r["context"], "variant": r.get("variant", ""),
                    "parse_us": p["parse_us"], "plan_us": p["plan_us"],
                    "upload_us": p["upload_us"], "ahead_us": p["ahead_us"],
                    "plan_reused": p["plan_reused"], "host_us": round(host, 1),
                    "cpu_us": round(host + p["ahead_us"], 1),
                    "cpu_share_of_step": round((host + p["ahead_us"]) / p["step_us"], 4),
                    "gpu_step_us": p["gpu_us"], "step_us": p["step_us"],
                    "share_of_step": round(host / p["step_us"], 4),
                    "share_of_gpu_step": round(host / p["gpu_us"], 4)})
    return {"rows": out}


# ------------------------------------------------------------------------------ report
def report(out_dir: Path) -> None:
    lines = ["# GPU decode benchmarks", ""]
    e = RESULTS.get("env", {})
    lines += [f"Device: {e.get('gpu')}, torch {e.get('torch')}, transformers {e.get('transformers')}, "
              f"copy bandwidth {e.get('copy_bandwidth_TBps')} TB/s (read + write), read bandwidth "
              f"{e.get('read_bandwidth_TBps')} TB/s (sum over 1 GiB).", ""]
    tn = RESULTS.get("tune", {})
    if "chosen" in tn:
        lines += [f"## Kernel tuning at context {tn['context']} (geometric mean us of all-blocks and "
                  f"10%, batch 1 and 4)", "", "| mask_mod / num_stages / num_warps | geo-mean us |",
                  "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in sorted(tn["geomean_us"].items(), key=lambda kv: kv[1])]
        lines += ["", f"Chosen: {tn['chosen']}", ""]
    elif "error" in tn:
        lines += [f"Tuning failed: {tn['error']}", ""]
    c = RESULTS.get("correct", {})
    if "kernel" in c:
        lines += ["## Correctness (GPU bf16 vs CPU fp32 reference)", "",
                  "| check | rel. error | ok |", "|---|---|---|"]
        for r in c["kernel"]:
            lines.append(f"| kernel {r['heads']} B={r['batch']} lengths={r['lengths']} bs={r['block_size']} "
                         f"| {r['rel_err']:.2e} | {r['ok']} |")
        for pol, r in c.get("engine", {}).items():
            if isinstance(r, dict):
                lines.append(f"| engine {pol}: logits max/median rel. err, argmax agree {r['argmax_agree']:.3f}, "
                             f"same reads {r['same_reads']} | {r['max_rel_err']:.2e} / {r['median_rel_err']:.2e} "
                             f"| {r['ok']} |")
        lines.append("")
    elif "error" in c:
        lines += [f"Correctness failed: {c['error']}", ""]
    k = RESULTS.get("kernel", {})
    if "rows" in k:
        lines += ["## Attention kernel (us per layer call, GPU time, L2 cold)", "",
                  "| context | batch | kernel | kept | us | HBM TB/s | speedup vs flex full | vs best dense |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in k["rows"]:
            lines.append(f"| {r['context']} | {r['batch']} | {r['kernel']} | {r['fraction']:.0%} | {r['us']} | "
                         f"{r['hbm_TBps']} | {r['speedup_vs_flex_full']} | {r['vs_best_dense']} |")
        lines.append("")
    elif "error" in k:
        lines += [f"Kernel benchmark failed: {k['error']}", ""]
    en = RESULTS.get("e2e", {})
    for r in en.get("runs", []):
        lines += [f"## End to end: {r['layers']}-layer 8B-shaped Llama, context {r['context']}, batch {r['batch']}, "
                  f"{r.get('variant', 'eager step')}",
                  "", "| policy | KV read | GPU us/step | wall us/step | tokens/s | bytes GB | bound us | "
                  "roofline | speedup (GPU) | Amdahl speedup | of Amdahl |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, p in r["policies"].items():
            lines.append(f"| {name} | {p['kv_fraction']:.1%} | {p['gpu_us']} | {p['step_us']} | {p['tokens_per_s']} | "
                         f"{p['bytes_GB']} | {p['bound_us']} | {p['roofline_fraction']} | {p['speedup_gpu']} | "
                         f"{p['amdahl_speedup']} | {p['of_amdahl']} |")
        lines.append("")
    if "error" in en:
        lines += [f"End-to-end benchmark failed: {en['error']}", ""]
    ov = RESULTS.get("overhead", {})
    if ov.get("rows"):
        lines += ["## Per-step host overhead (dac, batch 1)", "",
                  "Exposed: parse+detok, plan (commit of the plan made ahead, or a fresh plan when a "
                  "directive completed), token upload. Ahead: planning + mask staging for the next step "
                  "while the GPU runs (hidden).", "",
                  "| context | step | parse+detok us | plan/commit us | token upload us | ahead us | "
                  "plan reused | exposed us | exposed share | all CPU share |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in ov["rows"]:
            lines.append(f"| {r['context']} | {r['variant']} | {r['parse_us']} | {r['plan_us']} | "
                         f"{r['upload_us']} | {r['ahead_us']} | {r['plan_reused']:.0%} | {r['host_us']} | "
                         f"{r['share_of_step']:.2%} | {r['cpu_share_of_step']:.2%} |")
        lines.append("")
    (out_dir / "results.md").write_text("\n".join(lines))


def plots(out_dir: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = RESULTS.get("kernel", {})
    if "rows" in k:
        batches = sorted({r["batch"] for r in k["rows"]})
        fig, axes = plt.subplots(1, len(batches), figsize=(6 * len(batches), 4.5), squeeze=False)
        for ax, b in zip(axes[0], batches):
            rows = [r for r in k["rows"] if r["batch"] == b]
            series: dict[str, list[tuple[int, float]]] = {}
            for r in rows:
                name = f"flex {r['fraction']:.0%}" if r["kernel"] == "flex" else r["kernel"]
                series.setdefault(name, []).append((r["context"], r["us"]))
            for name, pts in series.items():
                pts.sort()
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-" if "flex" in name else "s--",
                        label=name)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("context (tokens)")
            ax.set_ylabel("us per layer call")
            ax.set_title(f"decode attention, batch {b}")
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / "kernel.png", dpi=120)
    en = RESULTS.get("e2e", {})
    if en.get("runs"):
        runs = en["runs"]
        fig, axes = plt.subplots(1, len(runs), figsize=(6 * len(runs), 4.5), squeeze=False)
        for ax, r in zip(axes[0], runs):
            names = list(r["policies"])
            gpu = [r["policies"][n]["gpu_us"] / 1e3 for n in names]
            bound = [r["policies"][n]["bound_us"] / 1e3 for n in names]
            ax.bar(names, gpu, label="measured (GPU)")
            ax.scatter(names, bound, color="k", marker="_", s=600, label="bytes / bandwidth bound")
            ax.set_ylabel("ms per decode step")
            ax.set_title(f"{r['layers']}-layer 8B Llama, {r['context']} ctx, batch {r['batch']}, "
                         f"{r.get('variant', '')}", fontsize=9)
            ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / "e2e.png", dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "bench/results"))
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke test of every part")
    ap.add_argument("--parts", default="tune,correct,kernel,e2e,overhead")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    global OUT_DIR
    OUT_DIR = out
    for name in ("cache_size_limit", "recompile_limit"):  # one compile per shape and mask
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 64)
    parts = set(args.parts.split(","))
    q = args.quick
    part("env", env)
    e = RESULTS.get("env", {})
    bw = max(e.get("copy_bandwidth_TBps", 0), e.get("read_bandwidth_TBps", 0)) or 3.0
    bw *= 1e12
    RESULTS["args"] = vars(args)
    if "tune" in parts:
        part("tune", tune, 32768 if q else 131072, [1, 4], 3)
    if "correct" in parts:
        part("correct", correct, q)
    if "kernel" in parts:
        ctxs = [8192, 32768] if q else [8192, 32768, 65536, 131072]
        part("kernel", kernel, ctxs, [1, 4], [0.03, 0.1, 0.3, 1.0], 3 if q else 7)
    if "e2e" in parts:
        cfgs = ([(32768, 1, 4, False), (32768, 1, 4, True)] if q else
                [(131072, 1, 32, False), (131072, 1, 32, True)])
        part("e2e", e2e, cfgs, 24 if q else 40, 2 if q else 4, bw)
    if "overhead" in parts:
        part("overhead", overhead, RESULTS.get("e2e", {}))
    RESULTS["wall_s"] = round(time.time() - T0, 1)
    dump()
    for fn in (report, plots):
        try:
            fn(out)
        except Exception:
            traceback.print_exc()
    print((out / "results.md").read_text() if (out / "results.md").exists() else "no report")


if __name__ == "__main__":
    main()
