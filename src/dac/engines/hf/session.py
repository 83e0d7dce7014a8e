"""DAC on an unmodified Hugging Face model: a registered attention function plus two hooks.

``with DACSession(model, tokenizer, layouts, policy="dac"): model.generate(...)``

* A forward **pre-hook** on the model sees each step's input ids. The first call is the prefill
  (ordinary causal attention). On every decode call it hands the token just sampled to the
  shared decode runtime (:class:`dac.runtime.BatchRuntime`: parser, directive state, the
  policy's kept blocks), so a directive completed by that token applies to this very step.
* The attention function ``"dac"`` (registered in transformers' ``AttentionInterface``) finds
  the session through :func:`dac.runtime.bound` and runs prefill through SDPA and decode
  through :func:`dac.kernels.reference.attend_kept`, which reads only the kept positions. The
  KV cache itself is written as usual and never modified. Only full-attention layers are
  masked: the sliding-window layers of a hybrid run SDPA over their own window, and its
  linear-attention layers (their own modules) are never touched, so KV reads are counted over
  the global layers.
* A forward **post-hook** closes the step's KV-read accounting.

The session does not choose tokens, so section-bounded decoding is not part of it: ``generate``
adds it to ``model.generate`` (``logits_processor=[SectionBound(section_bans(tokenizer,
layouts))]`` does the same for a ``model.generate`` call of your own).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from ...kernels.reference import attend_kept, positions_from_blocks
from ...planning import Policy, get_policy
from ...planning.blocks import PlanConfig, coverage, num_blocks
from ...protocol.context import PromptLayout, Span
from ...runtime import BatchRuntime, SequenceRuntime, StepRecord, bind, bound, model_eos_ids
from ..support import attention_modules, check_supported, global_layers, model_costs

ATTN_IMPLEMENTATION = "dac"

#: The decode kernel: (query, key, value, index, valid, scaling) -> output. GPU paths swap it.
Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, Any],
                  torch.Tensor]

__all__ = ["ATTN_IMPLEMENTATION", "DACSession", "Kernel", "StepRecord", "dac_attention",
           "register"]


def dac_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                  value: torch.Tensor, attention_mask: torch.Tensor | None,
                  dropout: float = 0.0, scaling: float | None = None, **kwargs: Any):
    session = bound(module)
    if not isinstance(session, DACSession) or not session.decoding \
            or module.layer_idx not in session.global_layers:  # sliding: the model's own
        if kwargs.get("s_aux") is not None:  # learned sinks: the model's own eager attention
            return _own_eager(module)(module, query, key, value, _additive(attention_mask),
                                      dropout=dropout, scaling=scaling, **kwargs)
        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      dropout=dropout, scaling=scaling, **kwargs)
    if query.shape[2] != 1:
        raise RuntimeError("DAC decodes one token per step; multi-token decode steps "
                           "(assisted or speculative generation) are not supported")
    return session.attend(module, query, key, value, scaling), None


def _own_eager(module: torch.nn.Module) -> Any:
    """The eager attention function of the module's own modeling file (it computes sinks)."""
    import sys

    return sys.modules[type(module).__module__].eager_attention_forward


def _additive(mask: torch.Tensor | None) -> torch.Tensor | None:
    """A boolean keep-mask (this implementation's mask format) as eager attention's additive
    one."""
    if mask is None or mask.dtype != torch.bool:
        return mask
    return torch.zeros(mask.shape, dtype=torch.float32, device=mask.device).masked_fill(
        ~mask, float("-inf"))


def register() -> None:
    """Make ``attn_implementation="dac"`` known to transformers (idempotent)."""
    AttentionInterface.register(ATTN_IMPLEMENTATION, dac_attention)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, sdpa_mask)


class DACSession:
    """Attach DAC to ``model`` for one batch of generation (a context manager)."""

    def __init__(self, model: Any, tokenizer: Any, layouts: list[PromptLayout],
                 policy: str | Policy = "dac", config: PlanConfig | None = None,
                 evidence: list[list[Span]] | None = None, record_blocks: bool = True,
                 kernel: Kernel = attend_kept):
        check_supported(model)
        self.model = model
        self.tokenizer = tokenizer
        self.policy = get_policy(policy)
        self.config = config or PlanConfig()
        self.kernel = kernel
        self.runtime = BatchRuntime(layouts, tokenizer, model_eos_ids(model, tokenizer),
                                    self.policy, self.config, evidence,
                                    record_blocks=record_blocks, costs=model_costs(model))
        self.decoding = False
        self._prefilled = False
        self._stack: contextlib.ExitStack | None = None
        self._modules = attention_modules(model)
        #: layers that read the kept blocks (sliding-window layers of a hybrid keep their
        #: window; linear-attention layers never call an attention function)
        self.global_layers = global_layers(model)
        self._pads: list[int] = []
        self._index: torch.Tensor | None = None
        self._valid: torch.Tensor | None = None
        self._layer_reads: list[float] = []
        self._layer_recall: list[float] = []
        self._layer_keep: list[torch.Tensor | None] = []  # per-head selections: count per block
        self._heads = 1
        self._layers_seen = 0

    @property
    def traces(self) -> list[SequenceRuntime]:
        """Per-sequence state: events, steps, blocks, text."""
        return self.runtime.seqs

    # -- attach / detach -------------------------------------------------------------------
    def __enter__(self) -> DACSession:
        register()
        stack = contextlib.ExitStack()
        prev = self.model.config._attn_implementation
        self.model.set_attn_implementation(ATTN_IMPLEMENTATION)
        if prev is not None:
            stack.callback(self.model.set_attn_implementation, prev)
        stack.enter_context(bind(self._modules, self))
        for hook in (self.model.register_forward_pre_hook(self._pre_forward, with_kwargs=True),
                     self.model.register_forward_hook(self._post_forward, with_kwargs=True)):
            stack.callback(hook.remove)
        self._stack = stack
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None
        self.decoding = False

    # -- hooks -----------------------------------------------------------------------------
    def _pre_forward(self, module: Any, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            raise ValueError("DAC needs input_ids (inputs_embeds alone carry no generated text)")
        if not self._prefilled:
            self._start(ids, kwargs.get("attention_mask"), kwargs.get("past_key_values"))
            return
        if ids.shape[1] != 1:
            raise RuntimeError("DAC decodes one token per step; got a step of "
                               f"{ids.shape[1]} tokens")
        self.decoding = True
        rt = self.runtime
        plans = rt.advance(ids[:, -1].tolist())
        self._layers_seen = 0
        n = len(rt)
        self._layer_reads, self._layer_recall = [0.0] * n, [0.0] * n
        self._layer_keep = [None] * n
        if not self.policy.query_aware:  # one plan for every layer: gather index, once a step
            self._index, self._valid = positions_from_blocks(
                plans, rt.lengths, self._pads, self.config.block_size, ids.device)

    def _start(self, ids: torch.Tensor, mask: torch.Tensor | None, cache: Any) -> None:
        if cache is not None and hasattr(cache, "get_seq_length") and cache.get_seq_length() > 0:
            raise RuntimeError("DAC sessions start from an empty KV cache")
        bsz, width = ids.shape
        if bsz != len(self.runtime):
            raise ValueError(f"batch of {bsz} sequences but {len(self.runtime)} layouts")
        pads = [0] * bsz
        if mask is not None and mask.dim() == 2:
            for b in range(bsz):
                row = mask[b].tolist()
                real = sum(row)
                if row != [0] * (width - real) + [1] * real:
                    raise ValueError("DAC batches must be left-padded (tokenizer.padding_side='left')")
                pads[b] = width - real
        for b, seq in enumerate(self.runtime.seqs):
            n = width - pads[b]
            if n != seq.layout.prompt_len:
                raise ValueError(f"row {b}: {n} prompt tokens but its layout has "
                                 f"{seq.layout.prompt_len}")
        self._pads = pads
        self._prefilled = True
        self.runtime.start([width - p for p in pads])

    def _post_forward(self, module: Any, args: tuple, kwargs: dict, output: Any) -> None:
        if not self.decoding or self._layers_seen == 0:
            return
        logits = getattr(output, "logits", None)
        if logits is not None:
            self.runtime.observe(logits[:, -1])
        if not self.policy.query_aware:
            self.runtime.record()
            return
        k = self._layers_seen
        shares = []
        for keep in self._layer_keep:  # layers x KV heads that read each block
            share = keep / (k * self._heads) if keep is not None else torch.zeros(0)
            shares.append({int(i): round(float(share[i]), 4) for i in share.nonzero().flatten()})
        self.runtime.record([r / k for r in self._layer_reads],
                            [r / k if seq.evidence else None
                             for r, seq in zip(self._layer_recall, self.runtime.seqs)], shares)

    # -- the decode attention --------------------------------------------------------------
    def attend(self, module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               scaling: float | None) -> torch.Tensor:
        self._layers_seen += 1
        sinks = getattr(module, "sinks", None)
        extra = {"sinks": sinks} if isinstance(sinks, torch.nn.Parameter) else {}
        if not self.policy.query_aware:
            return self.kernel(query, key, value, self._index, self._valid, scaling, **extra)
        index, valid = self._select(module.layer_idx, query, key, scaling)
        return self.kernel(query, key, value, index, valid, scaling, **extra)

    def _select(self, layer_idx: int, query: torch.Tensor, key: torch.Tensor,
                scaling: float | None) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        bs = cfg.block_size
        hk, d = key.shape[1], key.shape[-1]
        scale = scaling if scaling is not None else d ** -0.5
        rows: list[list[torch.Tensor]] = []
        rt = self.runtime
        for b, seq in enumerate(rt.seqs):
            n, off = rt.lengths[b], self._pads[b]
            keys = key[b, :, off:off + n]
            keep = self.policy.select(layer_idx, query[b, :, 0], keys, rt.plans[b], cfg, scale)
            if keep is None:
                keep = torch.zeros(hk, num_blocks(n, bs), dtype=torch.bool, device=key.device)
                keep[:, rt.plans[b]] = True
            count = keep.sum(0).float().cpu()
            prev = self._layer_keep[b]
            self._layer_keep[b] = count if prev is None else prev + count
            self._heads = hk
            per_head = []
            reads = recall = 0.0
            for h in range(hk):
                blk = keep[h].nonzero().flatten()
                pos = (blk[:, None] * bs + torch.arange(bs, device=key.device)).flatten()
                pos = pos[pos < n]
                per_head.append(pos + off)
                reads += len(pos)
                if seq.evidence and not seq.stopped:
                    recall += coverage(blk.tolist(), seq.evidence, bs)
            self._layer_reads[b] += reads / hk
            self._layer_recall[b] += recall / hk
            rows.append(per_head)
        width = max(len(p) for r in rows for p in r)
        index = torch.zeros(len(rows), hk, width, dtype=torch.long, device=key.device)
        valid = torch.zeros(len(rows), hk, width, dtype=torch.bool, device=key.device)
        for b, r in enumerate(rows):
            for h, p in enumerate(r):
                index[b, h, : len(p)] = p
                valid[b, h, : len(p)] = True
        return index, valid

    # -- after generation ------------------------------------------------------------------
    def finish(self, generated: list[list[int]]) -> None:
        """Feed the tokens no forward pass saw (the last sampled one) and close the parsers."""
        for seq, ids in zip(self.runtime.seqs, generated):
            seq.finish(ids)
        self.decoding = False
