"""DAC on vLLM's FlashInfer backend (GPU): same builder pattern as the CPU backend.

FlashInfer plans its decode wrappers from ``seq_lens_cpu_upper_bound`` and the block table, both
rewritten by :func:`.backends.apply_plans`. Not exercised by the CPU test suite.
"""

from __future__ import annotations

from vllm.v1.attention.backends.flashinfer import FlashInferBackend, FlashInferMetadataBuilder

from .backends import DACBuilderMixin


class DACFlashInferMetadataBuilder(DACBuilderMixin, FlashInferMetadataBuilder):
    pass


class DACFlashInferBackend(FlashInferBackend):
    @staticmethod
    def get_builder_cls() -> type[DACFlashInferMetadataBuilder]:
        return DACFlashInferMetadataBuilder
