"""The paper's roofline cost model of a response's decode time (its appendix C).

A response of ``D`` decode steps that attends ``A`` token positions in total (summed over its
steps, over the global layers) costs three terms, each at its own ceiling:

* matmul, compute-bound: ``2 x P x D`` FLOPs (``P`` active parameters) at ``mfu`` of the peak;
* global memory: ``A x b_kv`` bytes (KV bytes per token of the global layers) at ``mbu`` of
  the peak bandwidth;
* local memory: ``D x s_local`` bytes (the fixed per-step read of the sliding-window or
  linear-attention layers) at ``mbu`` of the peak bandwidth.

Weights are not charged: at serving batch sizes their read is amortized over the batch,
which is the regime the model describes. It is a projection, not a measurement;
``bench/cost_model.py`` measures the same responses on a GPU beside it.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Hardware:
    """Dense bf16 peak FLOPS, peak HBM bandwidth (bytes/s), and the utilizations charged."""

    name: str
    peak_flops: float
    bandwidth: float
    mfu: float = 0.40
    mbu: float = 0.70


#: accelerators by name (vendor peak figures, dense bf16); the paper projects on a B200
HARDWARE: dict[str, Hardware] = {
    "b200": Hardware("B200", 2.25e15, 8.0e12),
    "h200": Hardware("H200", 0.989e15, 4.8e12),
    "h100": Hardware("H100", 0.989e15, 3.35e12),
}


@dataclass(frozen=True)
class ModelCosts:
    """A model's constants: active parameters, global KV bytes per token, local bytes per
    decode step (:func:`dac.costs.cost_constants` gives the last two from a config)."""

    name: str
    params: float
    kv_bytes_per_token: float
    local_bytes_per_step: float


#: the paper's Table 4
PAPER_MODELS: dict[str, ModelCosts] = {
    "gemma-4-31b": ModelCosts("Gemma-4-31B", 31e9, 81_920, 838.9e6),
    "qwen-3.6-27b": ModelCosts("Qwen-3.6-27B", 27e9, 65_536, 78.45e6),
}

#: the paper's Table 5: per model and arm, (decode steps, attended tokens) of a response,
#: macro-averaged over its 15 sources
PAPER_TRACES: dict[str, dict[str, tuple[float, float]]] = {
    "gemma-4-31b": {"vanilla": (332, 13.43e6), "da": (448, 6.45e6)},
    "qwen-3.6-27b": {"vanilla": (573, 22.54e6), "da": (752, 15.52e6)},
}


@dataclass(frozen=True)
class DecodeTime:
    """The three terms of one response's projected decode time, in seconds."""

    matmul_s: float
    global_s: float
    local_s: float

    @property
    def total_s(self) -> float:
        return self.matmul_s + self.global_s + self.local_s

    def to_dict(self) -> dict[str, float]:
        return {"matmul_s": self.matmul_s, "global_s": self.global_s, "local_s": self.local_s,
                "total_s": self.total_s}


def decode_time(model: ModelCosts, steps: float, attended: float,
                hardware: Hardware | str = "b200") -> DecodeTime:
    """Projected decode time of a response of ``steps`` decode steps that attends
    ``attended`` token positions (module docstring)."""
    hw = HARDWARE[hardware.lower()] if isinstance(hardware, str) else hardware
    if steps < 0 or attended < 0:
        raise ValueError("decode steps and attended tokens cannot be negative")
    mem = hw.bandwidth * hw.mbu
    return DecodeTime(matmul_s=2 * model.params * steps / (hw.peak_flops * hw.mfu),
                      global_s=attended * model.kv_bytes_per_token / mem,
                      local_s=steps * model.local_bytes_per_step / mem)


def model_costs(model_dir: str | Path, name: str | None = None) -> ModelCosts:
    """A local model's constants: its config's KV and local bytes (bf16) and its parameter
    count, read from the safetensors headers (no weights loaded)."""
    from .costs import cost_constants, read_config

    c = cost_constants(read_config(model_dir))
    return ModelCosts(name or Path(model_dir).name, float(count_parameters(model_dir)),
                      c["global_kv_bytes_per_token"], c["local_bytes_per_step"])


def count_parameters(model_dir: str | Path) -> int:
    """Parameters in a model directory's ``*.safetensors`` files, from their JSON headers."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors file in {model_dir}")
    total = 0
    for f in files:
        with f.open("rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header: dict[str, Any] = json.loads(fh.read(size))
        for key, t in header.items():
            if key != "__metadata__":
                n = 1
                for d in t["shape"]:
                    n *= int(d)
                total += n
    return total
