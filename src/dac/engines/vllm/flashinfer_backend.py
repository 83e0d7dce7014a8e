"""DAC on vLLM's FlashInfer backend (GPU): the builder pattern of :mod:`.backends`.

FlashInfer plans its decode wrappers from ``seq_lens_cpu_upper_bound`` and the block table, both
rewritten by :func:`.backends.apply_plans`. Not exercised by the CPU test suite.
"""

from __future__ import annotations

from vllm.v1.attention.backends.flashinfer import FlashInferBackend, FlashInferMetadataBuilder

from .backends import dac_backend

DACFlashInferBackend, DACFlashInferMetadataBuilder = dac_backend(
    FlashInferBackend, FlashInferMetadataBuilder, __name__)
