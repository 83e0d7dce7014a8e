"""Engine configurations DAC cannot serve exactly, with the reason (no vLLM import here)."""

from __future__ import annotations

from typing import Any


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
        window = None
        try:
            window = model.get_sliding_window()
        except Exception:  # noqa: BLE001 - older configs
            window = getattr(model.hf_text_config, "sliding_window", None)
        if window:
            out.append(f"the model uses sliding-window attention (window {window}); compacted "
                       "block tables change index distances")
        text = getattr(model, "hf_text_config", None)
        layer_types = getattr(text, "layer_types", None) or []
        if any(t != "full_attention" for t in layer_types):
            out.append("the model mixes attention types (hybrid / sliding layers)")
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
