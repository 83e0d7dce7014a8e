"""Attention backends whose metadata builders compact the block tables of DAC decode rows.

Each backend subclasses vLLM's own and only changes the builder: before the parent's ``build``
it rewrites :class:`CommonAttentionMetadata` (block table, ``seq_lens``,
``seq_lens_cpu_upper_bound``, ``max_seq_len``) for the rows that have a plan in
:data:`.worker.CURRENT_PLANS` -- the pattern of vLLM's own chunked-local-attention builder.
The kernel then reads only the kept blocks; positions and the slot mapping (KV writes) are
untouched. Prefill rows and rows of requests without DAC are passed through unchanged.

The classes live at module level in importable modules (vLLM resolves a backend from its class
path). The CPU backend is tested; the FlashAttention and FlashInfer ones follow the same
pattern and are only defined where those backends import.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from typing import Any

from .compaction import compact_rows, kernel_blocks
from .groups import compacts, is_global_layer  # noqa: F401  (re-exported)
from .worker import CURRENT_PLANS

logger = logging.getLogger("dac.vllm")


def apply_plans(cm: Any, kernel_block: int) -> Any:
    """``cm`` with the DAC decode rows compacted (``cm`` itself when nothing applies)."""
    plans = CURRENT_PLANS.get()
    if not plans:
        return cm
    qsl = cm.query_start_loc_cpu.tolist()
    upper = cm.seq_lens_cpu_upper_bound
    lens = upper.tolist() if upper is not None else cm.seq_lens.cpu().tolist()
    rows: dict[int, list[int]] = {}
    for row, plan in plans.items():
        if row >= cm.num_reqs or qsl[row + 1] - qsl[row] != 1:
            continue  # decode rows only (one query token)
        if int(lens[row]) != plan.length:
            logger.warning("DAC: row %d of request %s has %d tokens, its plan %d; read in full",
                           row, plan.req_id, int(lens[row]), plan.length)
            continue
        try:
            kept = kernel_blocks(plan.blocks, plan.length, plan.block_size, kernel_block)
        except ValueError as e:
            logger.warning("DAC: request %s read in full: %s", plan.req_id, e)
            continue
        if len(kept) == -(-plan.length // kernel_block):
            continue  # everything is kept: nothing to compact
        rows[row] = kept
    if not rows:
        return cm
    known = {row: plans[row].length for row in rows}
    bt, sl, new = compact_rows(cm.block_table_tensor, cm.seq_lens, rows, kernel_block, known)
    new_upper = None
    if upper is not None:
        new_upper = upper.clone()
        for row, n in zip(rows, new):
            new_upper[row] = n
    return replace(cm, block_table_tensor=bt, seq_lens=sl, seq_lens_cpu_upper_bound=new_upper,
                   max_seq_len=int(max(new_upper.tolist() if new_upper is not None
                                       else sl.tolist())))


class DACBuilderMixin:
    """Mixed into a vLLM metadata builder: compact DAC rows, then build as usual.

    Only a builder whose group holds full-attention layers alone compacts (:func:`compacts`,
    decided once, in ``__init__``); every other builder (a sliding-window group of a hybrid, or
    any group :func:`compacts` declines) builds exactly as vLLM's own."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        from .worker import install_runner_hook

        install_runner_hook()  # builders exist only in worker processes
        self.dac_compacts = False
        try:
            from vllm.config import get_layers_from_vllm_config
            from vllm.model_executor.layers.attention import Attention

            layers = get_layers_from_vllm_config(
                self.vllm_config, Attention, self.layer_names)  # type: ignore[attr-defined]
            self.dac_compacts = compacts(self.kv_cache_spec,  # type: ignore[attr-defined]
                                         [layers[n] for n in self.layer_names  # type: ignore[attr-defined]
                                          if n in layers])
        except Exception:  # noqa: BLE001 - unknown layout: never compact
            logger.exception("DAC: cannot classify the attention group %s; it is read in full",
                             getattr(self, "layer_names", "?"))
            self.dac_compacts = False
        self.dac_trace = os.environ.get("DAC_VLLM_TRACE") or None
        if self.dac_compacts:
            # the runner may otherwise reuse another group's metadata with only the block
            # table swapped (a per-instance override: other builders keep vLLM's choice)
            self.supports_update_block_table = False

    def build(self, common_prefix_len: int, common_attn_metadata: Any,
              fast_build: bool = False) -> Any:
        cm = common_attn_metadata
        if self.dac_compacts:
            cm = apply_plans(cm, self.kv_cache_spec.block_size)  # type: ignore[attr-defined]
            if cm is not common_attn_metadata:
                common_prefix_len = 0  # a shared prefix no longer lines up across rows
        if self.dac_trace:
            self._trace(common_attn_metadata, cm)
        return super().build(common_prefix_len, cm, fast_build)  # type: ignore[misc]

    def _trace(self, before: Any, after: Any) -> None:
        """Debugging aid (``DAC_VLLM_TRACE=FILE``): one JSON line per build -- the group, whether
        it compacts, and the rows whose block table or length the parent's ``build`` got
        changed."""
        spec = self.kv_cache_spec  # type: ignore[attr-defined]
        changed = []
        if after is not before:
            n = int(before.num_reqs)
            bt0, bt1 = before.block_table_tensor[:n], after.block_table_tensor[:n]
            sl0, sl1 = before.seq_lens[:n].tolist(), after.seq_lens[:n].tolist()
            for r in range(n):
                if sl0[r] != sl1[r] or not bool((bt0[r] == bt1[r]).all()):
                    changed.append([r, int(sl0[r]), int(sl1[r])])
        rec = {"pid": os.getpid(), "layers": list(self.layer_names),  # type: ignore[attr-defined]
               "spec": type(spec).__name__, "window": getattr(spec, "sliding_window", None),
               "block_size": int(spec.block_size), "compacts": self.dac_compacts,
               "num_reqs": int(before.num_reqs), "changed": changed}
        with open(self.dac_trace, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")


def dac_backend(backend: type, builder: type, module: str) -> tuple[type, type]:
    """``(DAC<backend>, DAC<builder>)``: the backend whose metadata builder applies DAC plans.

    The classes are created in ``module`` under those names (vLLM imports a backend by its
    class path, so each must be a module-level name there)."""
    bname, kname = f"DAC{builder.__name__}", f"DAC{backend.__name__}"
    new_builder = type(bname, (DACBuilderMixin, builder), {"__module__": module,
                                                           "__qualname__": bname})
    new_backend = type(kname, (backend,), {
        "__module__": module, "__qualname__": kname,
        "get_builder_cls": staticmethod(lambda: new_builder)})
    return new_backend, new_builder


# -- CPU (tested) -------------------------------------------------------------------------
from vllm.v1.attention.backends.cpu_attn import (  # noqa: E402
    CPUAttentionBackend,
    CPUAttentionMetadataBuilder,
)

DACCPUAttentionBackend, DACCPUAttentionMetadataBuilder = dac_backend(
    CPUAttentionBackend, CPUAttentionMetadataBuilder, __name__)
