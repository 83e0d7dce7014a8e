"""DAC on vLLM's FlashAttention backend (GPU): same builder pattern as the CPU backend.

Written on the pattern of :mod:`.backends`; not exercised by the CPU test suite (no GPU build of
vLLM is available to it). Needs ``cudagraph_mode`` without full graphs (see :mod:`.support`).
"""

from __future__ import annotations

from vllm.v1.attention.backends.flash_attn import (
    FlashAttentionBackend,
    FlashAttentionMetadataBuilder,
)

from .backends import DACBuilderMixin


class DACFlashAttentionMetadataBuilder(DACBuilderMixin, FlashAttentionMetadataBuilder):
    pass


class DACFlashAttentionBackend(FlashAttentionBackend):
    @staticmethod
    def get_builder_cls() -> type[DACFlashAttentionMetadataBuilder]:
        return DACFlashAttentionMetadataBuilder
