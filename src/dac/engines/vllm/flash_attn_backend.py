"""DAC on vLLM's FlashAttention backend (GPU): the builder pattern of :mod:`.backends`.

Not exercised by the CPU test suite (no GPU build of vLLM is available to it). Needs
``cudagraph_mode`` without full graphs (see :mod:`.support`).
"""

from __future__ import annotations

from vllm.v1.attention.backends.flash_attn import (
    FlashAttentionBackend,
    FlashAttentionMetadataBuilder,
)

from .backends import dac_backend

DACFlashAttentionBackend, DACFlashAttentionMetadataBuilder = dac_backend(
    FlashAttentionBackend, FlashAttentionMetadataBuilder, __name__)
