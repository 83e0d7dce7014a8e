"""DAC as a vLLM plugin: in-place block-table masking of decode rows (see docs/vllm.md).

``VLLMEngine`` (the eval runner's engine interface) is imported lazily so that importing this
package does not import vLLM.
"""

from __future__ import annotations

from typing import Any

__all__ = ["VLLMEngine"]


def __getattr__(name: str) -> Any:
    if name == "VLLMEngine":
        from .engine import VLLMEngine

        return VLLMEngine
    raise AttributeError(name)
