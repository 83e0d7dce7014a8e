"""DAC on an unmodified Hugging Face model: a registered attention function plus two hooks.

``with DACSession(model, tokenizer, layouts, policy="dac"): model.generate(...)``

* A forward **pre-hook** on the model sees each step's input ids. The first call is the prefill
  (ordinary causal attention). On every decode call it feeds the token just sampled to each
  sequence's streaming parser, so a directive completed by that token applies to this very
  step, and asks the policy for the kept blocks, once per step for all layers.
* The attention function ``"dac"`` (registered in transformers' ``AttentionInterface``) runs
  prefill through SDPA and decode through :func:`dac.kernels.reference.attend_kept`, which reads
  only the kept positions. The KV cache itself is written as usual and never modified.
* A forward **post-hook** closes the step's KV-read accounting.

The session does not choose tokens, so section-bounded decoding is not part of it: ``generate``
adds it to ``model.generate`` (``logits_processor=[SectionBound(section_bans(tokenizer,
layouts))]`` does the same for a ``model.generate`` call of your own).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from ...kernels.reference import attend_kept, positions_from_blocks
from ...planning.blocks import PlanConfig, coverage, num_blocks, tokens_in_blocks
from ...planning.policies import Policy, SequenceState, get_policy
from ...protocol.context import PromptLayout, Span
from ...protocol.detok import IncrementalDetokenizer
from ...protocol.grammar import ProtocolEvent
from ...protocol.parser import StreamingParser
from .support import attention_modules, check_supported

ATTN_IMPLEMENTATION = "dac"

#: The decode kernel: (query, key, value, index, valid, scaling) -> output. GPU paths swap it.
Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, Any],
                  torch.Tensor]


def dac_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                  value: torch.Tensor, attention_mask: torch.Tensor | None,
                  dropout: float = 0.0, scaling: float | None = None, **kwargs: Any):
    session: DACSession | None = getattr(module, "_dac_session", None)
    if session is None or not session.decoding:
        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      dropout=dropout, scaling=scaling, **kwargs)
    if query.shape[2] != 1:
        raise RuntimeError("DAC decodes one token per step; multi-token decode steps "
                           "(assisted or speculative generation) are not supported")
    return session.attend(module, query, key, value, scaling), None


def register() -> None:
    """Make ``attn_implementation="dac"`` known to transformers (idempotent)."""
    AttentionInterface.register(ATTN_IMPLEMENTATION, dac_attention)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, sdpa_mask)


@dataclass
class StepRecord:
    step: int  # index of the generated token this forward processed
    length: int  # KV tokens in the sequence (logical)
    read: float  # KV tokens read, averaged over layers and KV heads
    recall: float | None = None  # share of evidence tokens read (when evidence is given)


class KVReads:
    """Decoding attention cost of a sequence, from its per-step records (``self.steps``)."""

    steps: list[StepRecord]

    @property
    def kv_read(self) -> float:
        return sum(s.read for s in self.steps)

    @property
    def kv_full(self) -> int:
        return sum(s.length for s in self.steps)

    @property
    def fraction(self) -> float:
        """KV tokens read / KV tokens full attention would read (1.0 with no decode step)."""
        return self.kv_read / self.kv_full if self.kv_full else 1.0


@dataclass
class SequenceTrace(KVReads):
    """Everything one sequence did under DAC: the timeline, reads, and the generated text."""

    layout: PromptLayout
    parser: StreamingParser
    detok: IncrementalDetokenizer
    evidence: list[Span] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    blocks: list[list[int]] = field(default_factory=list)  # kept blocks per step (text-driven)
    text: str = ""
    finished: bool = False

    @property
    def events(self) -> list[ProtocolEvent]:
        return self.parser.events


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
        self.record_blocks = record_blocks
        evidence = evidence or [[] for _ in layouts]
        if len(evidence) != len(layouts):
            raise ValueError("evidence must have one entry per layout")
        self.traces = [SequenceTrace(lay, StreamingParser(lay.num_sections),
                                     IncrementalDetokenizer(tokenizer), list(ev))
                       for lay, ev in zip(layouts, evidence)]
        self.eos_ids = _eos_ids(model, tokenizer)
        self.decoding = False
        self._prefilled = False
        self._hooks: list[Any] = []
        self._modules = attention_modules(model)
        self._prev_impl: Any = None
        self._pads: list[int] = []
        self._lengths: list[int] = []
        self._active: list[bool] = []
        self._base: list[list[int]] = []
        self._index: torch.Tensor | None = None
        self._valid: torch.Tensor | None = None
        self._layer_reads: list[float] = []
        self._layer_recall: list[float] = []
        self._layers_seen = 0

    # -- attach / detach -------------------------------------------------------------------
    def __enter__(self) -> DACSession:
        register()
        self._prev_impl = self.model.config._attn_implementation
        self.model.set_attn_implementation(ATTN_IMPLEMENTATION)
        for m in self._modules:
            m._dac_session = self
        self._hooks = [
            self.model.register_forward_pre_hook(self._pre_forward, with_kwargs=True),
            self.model.register_forward_hook(self._post_forward, with_kwargs=True),
        ]
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []
        for m in self._modules:
            if getattr(m, "_dac_session", None) is self:
                del m._dac_session
        if self._prev_impl is not None:
            self.model.set_attn_implementation(self._prev_impl)
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
        cfg = self.config
        toks = ids[:, -1].tolist()
        self._base = []
        for b, (tr, tok) in enumerate(zip(self.traces, toks)):
            if self._active[b] and tok in self.eos_ids:
                self._active[b] = False
                tr.finished = True
            if self._active[b]:
                step = len(tr.detok.ids)
                tr.parser.feed(tr.detok.push([tok]), step)
            self._lengths[b] += 1
            state = SequenceState(tr.layout, tr.parser.current, self._lengths[b],
                                  len(tr.detok.ids) - 1, b)
            self._base.append(self.policy.plan(state, cfg))
        self._layers_seen = 0
        if self.policy.query_aware:  # positions and reads come per layer from _select
            self._layer_reads = [0.0] * len(self.traces)
            self._layer_recall = [0.0] * len(self.traces)
        else:  # one plan for every layer: gather index and accounting, once per step
            self._index, self._valid = positions_from_blocks(
                self._base, self._lengths, self._pads, cfg.block_size, ids.device)
            self._layer_reads = [float(tokens_in_blocks(blk, n, cfg.block_size))
                                 for blk, n in zip(self._base, self._lengths)]
            self._layer_recall = [coverage(blk, tr.evidence, cfg.block_size) if tr.evidence else 0.0
                                  for blk, tr in zip(self._base, self.traces)]

    def _start(self, ids: torch.Tensor, mask: torch.Tensor | None, cache: Any) -> None:
        if cache is not None and hasattr(cache, "get_seq_length") and cache.get_seq_length() > 0:
            raise RuntimeError("DAC sessions start from an empty KV cache")
        bsz, width = ids.shape
        if bsz != len(self.traces):
            raise ValueError(f"batch of {bsz} sequences but {len(self.traces)} layouts")
        pads = [0] * bsz
        if mask is not None and mask.dim() == 2:
            for b in range(bsz):
                row = mask[b].tolist()
                real = sum(row)
                if row != [0] * (width - real) + [1] * real:
                    raise ValueError("DAC batches must be left-padded (tokenizer.padding_side='left')")
                pads[b] = width - real
        for b, tr in enumerate(self.traces):
            n = width - pads[b]
            if n != tr.layout.prompt_len:
                raise ValueError(f"row {b}: {n} prompt tokens but its layout has "
                                 f"{tr.layout.prompt_len}")
        self._pads = pads
        self._lengths = [width - p for p in pads]
        self._active = [True] * bsz
        self._prefilled = True
        self.policy.reset(bsz)

    def _post_forward(self, module: Any, args: tuple, kwargs: dict, output: Any) -> None:
        if not self.decoding or self._layers_seen == 0:
            return
        n_layers = self._layers_seen if self.policy.query_aware else 1
        logits = getattr(output, "logits", None)
        for b, tr in enumerate(self.traces):
            if not self._active[b]:
                continue
            if logits is not None:
                self.policy.observe(b, logits[b, -1])
            rec = None
            if tr.evidence:
                rec = self._layer_recall[b] / n_layers
            tr.steps.append(StepRecord(len(tr.detok.ids) - 1, self._lengths[b],
                                       self._layer_reads[b] / n_layers, rec))
            if self.record_blocks and not self.policy.query_aware:
                tr.blocks.append(self._base[b])

    # -- the decode attention --------------------------------------------------------------
    def attend(self, module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               scaling: float | None) -> torch.Tensor:
        self._layers_seen += 1
        if not self.policy.query_aware:
            return self.kernel(query, key, value, self._index, self._valid, scaling)
        index, valid = self._select(module.layer_idx, query, key, scaling)
        return self.kernel(query, key, value, index, valid, scaling)

    def _select(self, layer_idx: int, query: torch.Tensor, key: torch.Tensor,
                scaling: float | None) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        bs = cfg.block_size
        hk, d = key.shape[1], key.shape[-1]
        scale = scaling if scaling is not None else d ** -0.5
        rows: list[list[torch.Tensor]] = []
        for b, tr in enumerate(self.traces):
            n, off = self._lengths[b], self._pads[b]
            keys = key[b, :, off:off + n]
            keep = self.policy.select(layer_idx, query[b, :, 0], keys, self._base[b], cfg, scale)
            if keep is None:
                keep = torch.zeros(hk, num_blocks(n, bs), dtype=torch.bool, device=key.device)
                keep[:, self._base[b]] = True
            per_head = []
            reads = recall = 0.0
            for h in range(hk):
                blk = keep[h].nonzero().flatten()
                pos = (blk[:, None] * bs + torch.arange(bs, device=key.device)).flatten()
                pos = pos[pos < n]
                per_head.append(pos + off)
                reads += len(pos)
                if tr.evidence and self._active[b]:
                    recall += coverage(blk.tolist(), tr.evidence, bs)
            if self._active[b]:
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
        for tr, ids in zip(self.traces, generated):
            seen = len(tr.detok.ids)
            for tok in ids[seen:]:
                if tok in self.eos_ids:
                    break
                step = len(tr.detok.ids)
                tr.parser.feed(tr.detok.push([tok]), step)
            tail = tr.detok.flush()
            if tail:
                tr.parser.feed(tail, len(tr.detok.ids) - 1)
            tr.parser.finish(len(tr.detok.ids))
            tr.text = self.tokenizer.decode(tr.detok.ids, skip_special_tokens=True,
                                            clean_up_tokenization_spaces=False)
        self.decoding = False


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for src in (getattr(model, "generation_config", None), model.config, tokenizer):
        e = getattr(src, "eos_token_id", None)
        if e is None:
            continue
        ids.update(e if isinstance(e, (list, tuple)) else [e])
    return {int(i) for i in ids}
