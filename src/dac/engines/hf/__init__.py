"""The Hugging Face transformers engine."""

from .generate import ContextTooLongError, GenerationResult, SectionBound, generate
from .session import ATTN_IMPLEMENTATION, DACSession, StepRecord, dac_attention, register
from .support import UnsupportedModelError, check_supported

__all__ = [
    "ATTN_IMPLEMENTATION", "ContextTooLongError", "DACSession", "GenerationResult",
    "SectionBound", "StepRecord", "UnsupportedModelError", "check_supported", "dac_attention",
    "generate", "register",
]
