"""The per-sequence decode runtime every engine shares.

One decode step of one sequence is: the token just sampled goes to the streaming parser, the
directive in force and the sequence length become a :class:`~dac.planning.SequenceState`, the
policy plans the kept blocks, and the KV read is accounted. :class:`SequenceRuntime` does that
for one sequence, :class:`BatchRuntime` for a batch; the engines (``dac.engines.hf``,
``dac.engines.fast``, ``dac.engines.vllm``) only move tensors. The result types live here too,
so no engine depends on another.
"""

from .batch import BatchRuntime
from .binding import bind, bound
from .eos import eos_token_ids, model_eos_ids
from .sampling import GREEDY, Sampling
from .results import ContextTooLongError, GenerationResult, KVReads, StepRecord, check_fits
from .sequence import SequenceRuntime

__all__ = [
    "BatchRuntime", "ContextTooLongError", "GREEDY", "GenerationResult", "KVReads", "Sampling",
    "SequenceRuntime",
    "StepRecord", "bind", "bound", "check_fits", "eos_token_ids", "model_eos_ids",
]
