"""Dynamic Attention Control: the model declares where it attends; decoding reads only that.

Where things live: ``dac.protocol`` (prompt, sections, directive grammar, streaming parser),
``dac.planning`` (kept KV blocks per step; policies), ``dac.engines.hf`` (transformers engine),
``dac.kernels`` (the decode step that reads the kept blocks).
"""

__version__ = "0.1.0"
