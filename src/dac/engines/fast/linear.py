"""Linear-attention (Gated DeltaNet) layers in the fast engine: transformers' own layer, fed a
static state object instead of a transformers cache.

The GDN layer of ``qwen3_5`` / ``qwen3_next`` (transformers 5.x) reads and writes its state
through the ``cache_params`` it is called with: ``has_previous_state(layer)``,
``layers[layer].conv_states[0]`` / ``.recurrent_states[0]`` / ``.record_past``,
``update_conv_state`` and ``update_recurrent_state``. :class:`LinearStates` answers exactly
those, over tensors allocated once per decoder (``[B, conv_dim, kernel]`` in the model's dtype
and ``[B, Hv, dk, dv]`` in float32, as transformers' kernels return it):

* prefill runs one row at a time, so the row's final states are written into row ``r``;
* a decode step's conv update is in place (``causal_conv1d_update`` copies into the state)
  and the recurrent state is copied into its tensor: the addresses never change and
  ``has_previous_state`` is a constant ``True`` while decoding, so the step is capturable in
  a CUDA graph with the rest of the model.

The state object reaches the layer through a forward pre-hook on the GDN module (the model
itself runs with ``use_cache=False``). No transformers cache exists, so no layer stores K/V
twice: the attention layers' K/V live in the fast engine's own static caches.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from ..support import UnsupportedModelError


#: what marks a transformers Gated DeltaNet module (and sizes its state)
GDN_ATTRIBUTES = ("conv1d", "A_log", "conv_dim", "num_v_heads", "head_k_dim", "head_v_dim")


def linear_modules(model: Any, layers: Sequence[int]) -> dict[int, torch.nn.Module]:
    """The Gated DeltaNet module of each linear-attention layer (refused if it is another
    kind of linear attention, whose state this engine does not know)."""
    found: dict[int, torch.nn.Module] = {}
    for m in model.modules():
        idx = getattr(m, "layer_idx", None)
        if idx in layers and all(hasattr(m, a) for a in GDN_ATTRIBUTES):
            found[idx] = m
    missing = sorted(set(layers) - set(found))
    if missing:
        raise UnsupportedModelError(
            f"{type(model).__name__}: the fast engine runs Gated DeltaNet linear attention only "
            f"(layers {missing} are another kind): use the reference engine "
            "(dac.engines.hf.generate)")
    return found


class _LayerState:
    """One GDN layer's state, shaped like a transformers linear-attention cache layer."""

    record_past = False

    def __init__(self, conv: torch.Tensor, recurrent: torch.Tensor):
        self.conv_states = {0: conv}
        self.recurrent_states = {0: recurrent}


class LinearStates:
    """Static conv and recurrent states of every GDN layer of one decode batch."""

    def __init__(self, modules: dict[int, torch.nn.Module], n_layers: int, batch: int,
                 dtype: torch.dtype, device: torch.device):
        self.modules = modules
        self.conv: dict[int, torch.Tensor] = {}
        self.recurrent: dict[int, torch.Tensor] = {}
        self.layers: list[_LayerState | None] = [None] * n_layers
        for i, m in modules.items():
            kernel = int(m.conv_kernel_size if hasattr(m, "conv_kernel_size")
                         else m.conv1d.kernel_size[0])
            self.conv[i] = torch.zeros(batch, m.conv_dim, kernel, dtype=dtype, device=device)
            self.recurrent[i] = torch.zeros(batch, m.num_v_heads, m.head_k_dim, m.head_v_dim,
                                            dtype=torch.float32, device=device)
            self.layers[i] = _LayerState(self.conv[i], self.recurrent[i])
        #: the row a prefill writes (``None`` while decoding the whole batch)
        self.prefill_row: int | None = None

    def tensors(self) -> list[torch.Tensor]:
        """Every state tensor, layer by layer (conv, then recurrent)."""
        return [t for i in sorted(self.conv) for t in (self.conv[i], self.recurrent[i])]

    # -- what transformers' GDN layer calls ---------------------------------------------------
    def has_previous_state(self, layer_idx: int | None = None, state_idx: int | None = 0) -> bool:
        return self.prefill_row is None

    def update_conv_state(self, conv_states: torch.Tensor, layer_idx: int, state_idx: int = 0,
                          conv_kernel_size: int | None = None, **kwargs: Any) -> torch.Tensor:
        state = self.conv[layer_idx]
        k = state.shape[-1]
        if self.prefill_row is None:  # a multi-token step on top of the state: not used
            full = torch.cat([state, conv_states.to(state.dtype)], dim=-1)
            state.copy_(full[..., -k:])
            return full
        n = conv_states.shape[-1]
        row = state[self.prefill_row]
        row.zero_()
        m = min(n, k)
        row[:, k - m:] = conv_states[0, :, n - m:]
        return conv_states

    def update_recurrent_state(self, recurrent_states: torch.Tensor, layer_idx: int,
                               state_idx: int = 0, **kwargs: Any) -> torch.Tensor:
        state = self.recurrent[layer_idx]
        if self.prefill_row is None:
            state.copy_(recurrent_states)
            return state
        state[self.prefill_row].copy_(recurrent_states[0])
        return state[self.prefill_row]

    # -- attach to the model ------------------------------------------------------------------
    @contextlib.contextmanager
    def attached(self) -> Iterator[None]:
        """Inside, every GDN layer is called with this object as its ``cache_params``."""
        def hook(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            return args, {**kwargs, "cache_params": self}

        handles = [m.register_forward_pre_hook(hook, with_kwargs=True)
                   for m in self.modules.values()]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    @torch.no_grad()
    def fill_random(self, generator: torch.Generator) -> None:
        """Benchmarks: random states (small recurrent values: decay keeps them bounded)."""
        for i in self.conv:
            self.conv[i].normal_(generator=generator)
            self.recurrent[i].normal_(generator=generator).mul_(0.05)
