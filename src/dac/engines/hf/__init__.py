"""The Hugging Face transformers engine (the reference: exact, any policy)."""

from ...runtime import ContextTooLongError, GenerationResult, StepRecord
from ..support import UnsupportedModelError, check_supported
from .generate import SectionBound, generate
from .session import ATTN_IMPLEMENTATION, DACSession, dac_attention, register

__all__ = [
    "ATTN_IMPLEMENTATION", "ContextTooLongError", "DACSession", "GenerationResult",
    "SectionBound", "StepRecord", "UnsupportedModelError", "check_supported", "dac_attention",
    "generate", "register",
]
