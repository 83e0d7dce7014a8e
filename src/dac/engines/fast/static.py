"""The static-cache decode step: one K/V tensor per layer, FlexAttention over the kept blocks,
and the whole step (embedding, every layer, cache writes, logits) captured in one CUDA graph.

* **Static cache.** One ``[B, Hk, S, d]`` K and V tensor per full-attention (global) layer,
  allocated once in that layer's own shape. Row ``b`` holds its tokens at positions
  ``[0, length_b)`` (prefill runs row by row, so no padding is stored or read); each decode
  step writes its K/V at ``length_b - 1`` per row.
* **Hybrids** (:mod:`.layers`). Sliding-window layers keep a ring of ``window`` slots
  (:mod:`.ring`); Gated DeltaNet layers run transformers' own layer on static conv and
  recurrent states (:mod:`.linear`). Only the global layers read the kept blocks.
* **Kernel.** The model runs unmodified with the attention function ``"dac_fast"``, which finds
  this object through :func:`dac.runtime.bound`: prefill is causal SDPA, decode is
  :func:`dac.kernels.flex.flex_decode` over a :class:`~dac.kernels.flex.KeptBlocks` mask
  whose tensors are rewritten in place each step (and, for Quest, per layer on the device);
  a sliding layer's decode is SDPA over its ring with a valid-slot mask computed on the
  device.
* **Graphs.** On CUDA the step is captured once and replayed, every layer kind included; per
  step the host only copies the step's tokens and the staged plan (a few small tensors).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

from ...kernels.flex import (KeptBlocks, cache_length, check_kernel_block, flex_decode,
                             shared_q_len)
from ...runtime import bind, bound
from ..support import UnsupportedModelError, attention_modules, max_positions
from .layers import LayerSpec, config_value, layer_specs, text_config
from .linear import LinearStates, linear_modules
from .quest import DeviceQuest
from .ring import ring_decode, store_prompt, window_prefill

ATTN_IMPLEMENTATION = "dac_fast"


def fast_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                   value: torch.Tensor, attention_mask: torch.Tensor | None,
                   dropout: float = 0.0, scaling: float | None = None, **kwargs: Any):
    step = bound(module)
    if not isinstance(step, StaticStep):
        raise RuntimeError("attention 'dac_fast' runs only inside a FastDecoder")
    return step.attend(module.layer_idx, query, key, value, scaling), None


def register() -> None:
    """Make ``attn_implementation="dac_fast"`` known to transformers (idempotent). No mask
    function is registered: the model then builds no attention mask at all."""
    AttentionInterface.register(ATTN_IMPLEMENTATION, fast_attention)


#: one K (or V) tensor per decoder layer: the static cache of a global layer, the ring of a
#: sliding layer, ``None`` for a linear-attention layer or a KV-shared one
LayerCaches = list["torch.Tensor | None"]


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a CUDA graph records (vLLM and SGLang likewise
    freeze the collector during capture): a collection can run a finalizer that calls CUDA,
    which invalidates the capture at whatever kernel happens to be recording."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class StaticStep:
    """Static cache, kept-block mask and the (graph-captured) decode forward of one batch."""

    def __init__(self, model: Any, *, batch_size: int, max_len: int, block_size: int,
                 per_head: bool = False, cuda_graph: bool | None = None,
                 compile_model: bool = False,
                 kv: tuple[LayerCaches, LayerCaches] | None = None):
        """``kv``: another step's ``(k, v)`` to share (global caches and sliding rings; the
        linear layers' states are never shared)."""
        self.model = model
        tc = text_config(model)
        self.n_layers = tc.num_hidden_layers
        self.hq = tc.num_attention_heads
        v_dim = config_value(tc, "v_head_dim")
        head_dim = config_value(tc, "head_dim") or tc.hidden_size // self.hq
        if config_value(tc, "kv_lora_rank") or (v_dim is not None and v_dim != head_dim):
            raise UnsupportedModelError(
                f"{type(model).__name__}: the fast engine's static cache holds keys and values "
                "of one head size; latent attention (MLA) has others: use the reference engine "
                "(dac.engines.hf.generate)")
        if config_value(tc, "use_bidirectional_attention") == "all":
            raise UnsupportedModelError(
                f"{type(model).__name__}: bidirectional attention is not causal decoding")
        self.layers: list[LayerSpec] = layer_specs(model)
        self.global_ids = [s.index for s in self.layers if s.kind == "global"]
        shapes = {(s.kv_heads, s.head_dim) for s in self.layers if s.kind == "global"}
        if len(shapes) != 1:
            raise UnsupportedModelError(
                f"{type(model).__name__}: the fast engine needs one K/V shape across the "
                f"full-attention layers (one kept-block mask), found {sorted(shapes)}")
        #: KV heads and head size of the global layers (the kept-block mask and Quest's)
        self.hk, self.d = shapes.pop()
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        if self.device.type == "cuda":
            check_kernel_block(block_size)
        limit = max_positions(model)
        if limit is not None and max_len > limit:
            raise ValueError(f"max_len {max_len} exceeds the model's {limit} positions")
        self.batch, self.max_len = batch_size, max_len
        self.cache_len = cache_length(max_len, block_size)
        self.num_blocks = self.cache_len // block_size
        want = self._cache_shapes()
        if kv is None:
            kv = ([self._zeros(shape) for shape in want], [self._zeros(shape) for shape in want])
        else:
            got = [None if t is None else tuple(t.shape) for t in kv[0]]
            if got != want or [None if t is None else tuple(t.shape) for t in kv[1]] != want:
                raise ValueError(f"shared cache has shapes {got}, need {want}")
        self.k: LayerCaches = list(kv[0])
        self.v: LayerCaches = list(kv[1])
        linear = [s.index for s in self.layers if s.kind == "linear"]
        self.linear: LinearStates | None = None
        if linear:
            self.linear = LinearStates(linear_modules(model, linear), self.n_layers, batch_size,
                                       self.dtype, self.device)
        heads = self.hk if per_head else 1
        q_len = self.hq // self.hk if per_head else shared_q_len(self.hq, self.hk)
        self.mask = KeptBlocks(batch_size, heads, self.cache_len, block_size, q_len=q_len,
                               device=self.device)
        self.quest: DeviceQuest | None = None  # set by the decoder for Quest
        dev = self.device
        # this step's input token and write slot per row, one int64 buffer: one copy per step
        self._step_in = torch.zeros(2 * batch_size, dtype=torch.long, device=dev)
        self.ids = self._step_in[:batch_size].view(batch_size, 1)
        self.pos = self._step_in[batch_size:]
        self._bidx = torch.arange(batch_size, device=dev)
        # sliding layers: per window size, the slot iota and this step's slot and valid mask
        # (computed on the device at the start of each step, inside the graph)
        self._windows = sorted({s.window for s in self.layers if s.kind == "window"})
        self._slot_iota = {w: torch.arange(w, device=dev) for w in self._windows}
        self._ring_slot: dict[int, torch.Tensor] = {}
        self._ring_valid: dict[int, torch.Tensor] = {}
        self._h_step = torch.zeros(2 * batch_size, dtype=torch.long)
        if dev.type == "cuda":
            self._h_step = self._h_step.pin_memory()
        self.prefill_row: int | None = None
        self._modules = attention_modules(model)
        self.use_graph = (dev.type == "cuda") if cuda_graph is None else cuda_graph
        if self.use_graph and dev.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA model")
        self._graph: Any = None
        self._logits: torch.Tensor | None = None
        # compiling the whole step fuses the many small per-layer kernels (norms, rotary, ...)
        self._step_fn = torch.compile(self._forward, dynamic=False) if compile_model \
            else self._forward
        register()

    @contextlib.contextmanager
    def attached(self) -> Iterator[None]:
        """The model runs ``dac_fast`` attention against this step while inside."""
        prev = self.model.config._attn_implementation
        self.model.set_attn_implementation(ATTN_IMPLEMENTATION)
        try:
            with bind(self._modules, self), (self.linear.attached() if self.linear is not None
                                             else contextlib.nullcontext()):
                yield
        finally:
            self.model.set_attn_implementation(prev)

    def _cache_shapes(self) -> list[tuple[int, ...] | None]:
        b = self.batch
        out: list[tuple[int, ...] | None] = []
        for s in self.layers:
            if not s.stores:
                out.append(None)
            elif s.kind == "global":
                out.append((b, s.kv_heads, self.cache_len, s.head_dim))
            else:
                out.append((b, s.kv_heads, s.window, s.head_dim))
        return out

    def _zeros(self, shape: tuple[int, ...] | None) -> torch.Tensor | None:
        return None if shape is None else torch.zeros(shape, dtype=self.dtype, device=self.device)

    def global_keys(self) -> LayerCaches:
        """Per layer, the static key cache a global layer reads (its own or its source's);
        ``None`` for the other layers."""
        return [self.k[s.source] if s.kind == "global" else None for s in self.layers]

    def caches(self) -> list[torch.Tensor]:
        """Every tensor the step keeps between steps: K and V of each storing layer (static
        cache or ring), then the linear layers' conv and recurrent states (tests)."""
        out = [t for pair in zip(self.k, self.v) for t in pair if t is not None]
        return out + (self.linear.tensors() if self.linear is not None else [])

    # -- attention (called by the model's layers) -------------------------------------------
    def attend(self, layer: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               scaling: float | None) -> torch.Tensor:
        spec = self.layers[layer]
        if self.prefill_row is not None:
            return self._prefill_attend(spec, query, key, value, scaling)
        if query.shape[2] != 1:
            raise RuntimeError("the fast decoder decodes one token per step")
        src = spec.source
        kc, vc = self.k[src], self.v[src]
        assert kc is not None and vc is not None
        if spec.kind == "window":
            if spec.stores:
                slot = self._ring_slot[spec.window]
                kc[self._bidx, :, slot] = key[:, :, 0]
                vc[self._bidx, :, slot] = value[:, :, 0]
            return ring_decode(query, kc, vc, self._ring_valid[spec.window], scaling)
        knew = key[:, :, 0]
        if spec.stores:
            kc[self._bidx, :, self.pos] = knew
            vc[self._bidx, :, self.pos] = value[:, :, 0]
        if self.quest is not None:
            self.quest.select(layer, query, knew, self.pos, self.mask)
        return flex_decode(query, kc, vc, self.mask, scaling, compiled=self.device.type == "cuda")

    def _prefill_attend(self, spec: LayerSpec, query: torch.Tensor, key: torch.Tensor,
                        value: torch.Tensor, scaling: float | None) -> torch.Tensor:
        """One prompt (batch 1) into row ``prefill_row``: causal (or causal + sliding)
        attention over it, and its K/V into the layer's cache or ring."""
        r, n = self.prefill_row, key.shape[2]
        assert r is not None
        kc, vc = self.k[spec.index], self.v[spec.index]
        if spec.kind == "window":
            if kc is not None and vc is not None:
                store_prompt(kc, r, key[0])
                store_prompt(vc, r, value[0])
            return window_prefill(query, key, value, spec.window, scaling)
        if kc is not None and vc is not None:
            kc[r, :, :n] = key[0]
            vc[r, :, :n] = value[0]
        out = F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scaling,
                                             enable_gqa=query.shape[1] != key.shape[1])
        return out.transpose(1, 2)

    # -- the step ----------------------------------------------------------------------------
    def _forward(self) -> torch.Tensor:
        for w in self._windows:  # the sliding layers' write slot and valid slots, per row
            self._ring_slot[w] = self.pos % w
            self._ring_valid[w] = self._slot_iota[w][None] <= self.pos[:, None]
        out = self.model(input_ids=self.ids, position_ids=self.pos[:, None], use_cache=False)
        return out.logits[:, -1]

    def capture(self) -> None:
        """Record the step in a CUDA graph (after a warm-up on a side stream)."""
        # a valid dummy state (prefill or fill_random overwrite what the warm-up writes)
        self.mask.set_blocks([[0]] * self.batch, [1] * self.batch)
        self._step_in.zero_()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with self.attached(), torch.no_grad():
            with torch.cuda.stream(stream):
                for _ in range(3):
                    self._step_fn()
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            # thread_local: another thread's CUDA call cannot invalidate this capture
            with torch.cuda.graph(graph, capture_error_mode="thread_local"), gc_paused():
                self._logits = self._step_fn()
        self._graph = graph
        torch.cuda.synchronize()

    def run(self) -> torch.Tensor:
        """The decode forward for the staged tokens and plan: logits ``[B, V]``."""
        if self._graph is not None:
            self._graph.replay()
            return self._logits  # type: ignore[return-value]
        with torch.no_grad(), self.attached():
            return self._step_fn()

    def set_tokens(self, tokens: Sequence[int], lengths: Sequence[int]) -> None:
        """This step's input token per row, written at its row's ``length - 1``."""
        b = self.batch
        self._h_step[:b] = torch.as_tensor(list(tokens), dtype=torch.long)
        self._h_step[b:] = torch.as_tensor(list(lengths), dtype=torch.long) - 1
        self._step_in.copy_(self._h_step, non_blocking=True)

    # -- cache setup -------------------------------------------------------------------------
    @torch.no_grad()
    def prefill(self, prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        """Run each prompt through the model into its cache row; next-token logits ``[B, V]``."""
        if len(prompts) != self.batch:
            raise ValueError(f"decoder built for {self.batch} rows, got {len(prompts)} prompts")
        rows = []
        with self.attached():
            for r, ids in enumerate(prompts):
                n = len(ids)
                if not 0 < n < self.max_len:
                    raise ValueError(f"row {r}: prompt of {n} tokens does not fit max_len "
                                     f"{self.max_len} (one position is needed to decode)")
                self.prefill_row = r
                if self.linear is not None:
                    self.linear.prefill_row = r
                try:
                    t = torch.as_tensor(list(ids), dtype=torch.long, device=self.device)[None]
                    pos = torch.arange(n, device=self.device)[None]
                    out = self.model(input_ids=t, position_ids=pos, use_cache=False,
                                     logits_to_keep=1)
                finally:
                    self.prefill_row = None
                    if self.linear is not None:
                        self.linear.prefill_row = None
                rows.append(out.logits[0, -1])
                if self.quest is not None:
                    self.quest.fill(r, self.global_keys(), n)
        return torch.stack(rows)

    @torch.no_grad()
    def fill_random(self, lengths: Sequence[int], seed: int = 0) -> None:
        """Benchmarks: random K/V for ``lengths[b]`` tokens per row (no model prefill)."""
        gen = torch.Generator(device=self.device).manual_seed(seed)
        for layer in range(self.n_layers):  # global caches and sliding rings
            for t in (self.k[layer], self.v[layer]):
                if t is not None:
                    t.normal_(generator=gen)
        if self.linear is not None:
            self.linear.fill_random(gen)
        for r, n in enumerate(lengths):
            if not 0 < n < self.max_len:
                raise ValueError(f"row {r}: length {n} does not fit max_len {self.max_len}")
            if self.quest is not None:
                self.quest.fill(r, self.global_keys(), n)
