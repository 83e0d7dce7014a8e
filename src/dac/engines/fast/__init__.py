"""The fast engine: static KV cache, FlexAttention over the kept blocks, CUDA graphs.

:class:`FastEngine` is an :class:`~dac.engines.base.Engine` (``dac eval --engine fast``);
:class:`FastDecoder` decodes one batch shape; :class:`~.static.StaticStep` is the captured
forward and :class:`~.quest.DeviceQuest` Quest's selection on the device. Hybrids run too
(:mod:`.layers`): full-attention layers read the kept blocks from a static cache, sliding-window
layers a ring of their window (:mod:`.ring`), Gated DeltaNet layers their state (:mod:`.linear`).
"""

from .decoder import FastDecoder
from .engine import FastEngine

__all__ = ["FastDecoder", "FastEngine"]
