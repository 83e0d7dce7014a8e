"""The vLLM general plugin (entry point ``vllm.general_plugins: dac``).

vLLM calls :func:`register` in every process it starts (front end, engine core, workers). It
overrides the attention backends with subclasses whose metadata builders apply DAC plans
(:mod:`.backends`); requests without DAC options are served exactly as before. On CPU the
platform always picks ``CPU_ATTN``, so that member itself is overridden. Set
``DAC_VLLM_PLUGIN=0`` to leave vLLM untouched.
"""

from __future__ import annotations

import os

_BACKENDS = {
    "CPU_ATTN": "dac.engines.vllm.backends.DACCPUAttentionBackend",
    "FLASH_ATTN": "dac.engines.vllm.flash_attn_backend.DACFlashAttentionBackend",
    "FLASHINFER": "dac.engines.vllm.flashinfer_backend.DACFlashInferBackend",
}

_registered = False


def register() -> None:
    """Override the attention backends (idempotent; cheap: class paths only)."""
    global _registered
    if _registered or os.environ.get("DAC_VLLM_PLUGIN", "1").strip().lower() in ("0", "false", "off"):
        return
    from vllm.v1.attention.backends.registry import AttentionBackendEnum, register_backend

    for member, path in _BACKENDS.items():
        register_backend(getattr(AttentionBackendEnum, member), path)
    _registered = True
