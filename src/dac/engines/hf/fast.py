"""Fast decode for the Hugging Face engine: static KV cache, FlexAttention over the kept blocks,
and the whole decode step captured in one CUDA graph.

``FastDecoder(model, batch_size=1, max_len=131072, policy="dac").generate(tok, layouts)``

It computes what :func:`dac.engines.hf.generate.generate` computes (same parser, planner and
accounting; greedy decoding), organised for speed:

* **Static cache.** One ``[B, Hk, S, d]`` K and V tensor per layer, allocated once. Row ``b``
  holds its tokens at positions ``[0, length_b)`` (prefill runs row by row, so no padding is
  stored or read); each decode step writes its K/V at ``length_b`` per row.
* **Kernel.** The model runs unmodified with the attention function ``"dac_fast"``: prefill is
  causal SDPA, decode is :func:`dac.kernels.flex.flex_decode` over a
  :class:`~dac.kernels.flex.KeptBlocks` mask whose tensors are rewritten in place each step.
* **Graphs.** On CUDA the step (embedding, all layers, cache writes, logits) is captured once
  in a CUDA graph and replayed; per step the host only parses the new token, plans the kept
  blocks and copies a few small tensors.
* **Quest** (query-aware) runs on the device inside the graph: per-block key min/max are kept
  up to date as tokens are written, each layer scores blocks from its query and keeps the top
  ones per KV head (ranks beyond the row's budget are dropped, so one static top-k serves all
  lengths). The oracle reads all keys by design and is refused here.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

from ...kernels.flex import KeptBlocks, cache_length, flex_decode, shared_q_len
from ...planning.blocks import PlanConfig, num_blocks, tokens_in_blocks
from ...planning.policies import Policy, QuestPolicy, SequenceState, get_policy
from ...protocol.constraint import section_bans
from ...protocol.context import PromptLayout
from ...protocol.detok import IncrementalDetokenizer
from ...protocol.parser import StreamingParser, strip_directives
from .generate import GenerationResult, ban_mask, max_positions
from .session import SequenceTrace, StepRecord, _eos_ids
from .support import attention_modules, check_supported

ATTN_IMPLEMENTATION = "dac_fast"


def fast_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                   value: torch.Tensor, attention_mask: torch.Tensor | None,
                   dropout: float = 0.0, scaling: float | None = None, **kwargs: Any):
    dec: FastDecoder | None = getattr(module, "_dac_fast", None)
    if dec is None:
        raise RuntimeError("attention 'dac_fast' runs only inside a FastDecoder")
    return dec._attend(module.layer_idx, query, key, value, scaling), None


def register() -> None:
    """Make ``attn_implementation="dac_fast"`` known to transformers (idempotent). No mask
    function is registered: the model then builds no attention mask at all."""
    AttentionInterface.register(ATTN_IMPLEMENTATION, fast_attention)


def _text_config(model: Any) -> Any:
    cfg = model.config
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


class FastDecoder:
    """Static-cache, block-sparse, graph-captured greedy decoding of one batch shape.

    One decoder serves many generations of up to ``batch_size`` rows and ``max_len`` tokens
    each. ``kv`` lets several decoders (e.g. one per policy) share one cache.
    """

    def __init__(self, model: Any, *, batch_size: int, max_len: int,
                 policy: str | Policy = "dac", config: PlanConfig | None = None,
                 cuda_graph: bool | None = None, compile_model: bool = False,
                 account: bool = True,
                 kv: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None):
        check_supported(model)
        self.model = model
        self.policy = get_policy(policy)
        if getattr(self.policy, "needs_logits", False):  # e.g. "dac+safety"
            raise ValueError(f"policy {self.policy.name!r} needs each step's logits; "
                             "use the reference engine (dac.engines.hf.generate)")
        if self.policy.query_aware and not isinstance(self.policy, QuestPolicy):
            raise ValueError(f"policy {self.policy.name!r} reads every key to choose blocks "
                             "(analysis only); use the reference engine (dac.engines.hf.generate)")
        self.config = config or PlanConfig()
        tc = _text_config(model)
        self.n_layers = tc.num_hidden_layers
        self.hq = tc.num_attention_heads
        self.hk = getattr(tc, "num_key_value_heads", None) or self.hq
        self.d = getattr(tc, "head_dim", None) or tc.hidden_size // self.hq
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        limit = max_positions(model)
        if limit is not None and max_len > limit:
            raise ValueError(f"max_len {max_len} exceeds the model's {limit} positions")
        self.batch, self.max_len = batch_size, max_len
        bs = self.config.block_size
        self.cache_len = cache_length(max_len, bs)
        self.num_blocks = self.cache_len // bs
        shape = (batch_size, self.hk, self.cache_len, self.d)
        if kv is None:
            kv = ([torch.zeros(shape, dtype=self.dtype, device=self.device)
                   for _ in range(self.n_layers)],
                  [torch.zeros(shape, dtype=self.dtype, device=self.device)
                   for _ in range(self.n_layers)])
        elif kv[0][0].shape != shape or len(kv[0]) != self.n_layers:
            raise ValueError(f"shared cache has shape {tuple(kv[0][0].shape)}, need {shape}")
        self.k, self.v = kv
        self.quest = isinstance(self.policy, QuestPolicy)
        heads = self.hk if self.quest else 1
        q_len = self.hq // self.hk if self.quest else shared_q_len(self.hq, self.hk)
        self.mask = KeptBlocks(batch_size, heads, self.cache_len, bs, q_len=q_len,
                               device=self.device)
        dev = self.device
        # this step's input token and write slot per row, one int64 buffer: one copy per step
        self._step_in = torch.zeros(2 * batch_size, dtype=torch.long, device=dev)
        self.ids = self._step_in[:batch_size].view(batch_size, 1)
        self.pos = self._step_in[batch_size:]
        self._bidx = torch.arange(batch_size, device=dev)
        pin = dev.type == "cuda"
        self._h_step = torch.zeros(2 * batch_size, dtype=torch.long)
        self._h_extra = torch.zeros(batch_size, dtype=torch.long)
        if pin:
            self._h_step, self._h_extra = self._h_step.pin_memory(), self._h_extra.pin_memory()
        self.account = account
        if self.quest:
            mshape = (batch_size, self.hk, self.num_blocks, self.d)
            self.kmin = [torch.zeros(mshape, dtype=self.dtype, device=dev) for _ in range(self.n_layers)]
            self.kmax = [torch.zeros(mshape, dtype=self.dtype, device=dev) for _ in range(self.n_layers)]
            self.q_base = torch.zeros(batch_size, self.num_blocks, dtype=torch.bool, device=dev)
            self.q_extra = torch.zeros(batch_size, dtype=torch.long, device=dev)
            self.topk = min(self.num_blocks, self.policy.budget_blocks(max_len, self.config))
            self._blk_iota = torch.arange(self.num_blocks, device=dev)
            self._rank = torch.arange(self.topk, device=dev)
            self.reads = torch.zeros(batch_size, dtype=torch.float32, device=dev)
        self.lengths = [0] * batch_size
        self.prefill_row: int | None = None
        self._modules = attention_modules(model)
        self.use_graph = (dev.type == "cuda") if cuda_graph is None else cuda_graph
        if self.use_graph and dev.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA model")
        self._graph: Any = None
        self._logits: torch.Tensor | None = None
        # compiling the whole step fuses the many small per-layer kernels (norms, rotary, ...)
        self._step_fn = torch.compile(self._forward, dynamic=False) if compile_model else self._forward
        register()
        if self.use_graph:
            with self._attached():
                self._capture()

    # -- attach ----------------------------------------------------------------------------
    class _Attach:
        def __init__(self, dec: FastDecoder):
            self.dec = dec

        def __enter__(self) -> None:
            d = self.dec
            self.prev = d.model.config._attn_implementation
            d.model.set_attn_implementation(ATTN_IMPLEMENTATION)
            for m in d._modules:
                m._dac_fast = d

        def __exit__(self, *exc: Any) -> None:
            d = self.dec
            for m in d._modules:
                if getattr(m, "_dac_fast", None) is d:
                    del m._dac_fast
            d.model.set_attn_implementation(self.prev)

    def _attached(self) -> FastDecoder._Attach:
        return FastDecoder._Attach(self)

    # -- attention (called by the model's layers) -------------------------------------------
    def _attend(self, layer: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                scaling: float | None) -> torch.Tensor:
        if self.prefill_row is not None:
            r, n = self.prefill_row, key.shape[2]
            self.k[layer][r, :, :n] = key[0]
            self.v[layer][r, :, :n] = value[0]
            out = F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scaling,
                                                 enable_gqa=self.hq != self.hk)
            return out.transpose(1, 2)
        if query.shape[2] != 1:
            raise RuntimeError("the fast decoder decodes one token per step")
        kc, vc = self.k[layer], self.v[layer]
        knew = key[:, :, 0]
        kc[self._bidx, :, self.pos] = knew
        vc[self._bidx, :, self.pos] = value[:, :, 0]
        if self.quest:
            self._quest_select(layer, query, knew)
        return flex_decode(query, kc, vc, self.mask, scaling, compiled=self.device.type == "cuda")

    def _quest_select(self, layer: int, query: torch.Tensor, knew: torch.Tensor) -> None:
        """Update the written block's key bounds, then keep base + top blocks per KV head."""
        bs, b = self.config.block_size, self.batch
        blk = self.pos // bs
        first = (self.pos % bs == 0)[:, None, None]
        kmin, kmax = self.kmin[layer], self.kmax[layer]
        kmin[self._bidx, :, blk] = torch.where(first, knew, torch.minimum(kmin[self._bidx, :, blk], knew))
        kmax[self._bidx, :, blk] = torch.where(first, knew, torch.maximum(kmax[self._bidx, :, blk], knew))
        lengths = self.mask.lengths
        valid = self._blk_iota[None] * bs < lengths[:, None]  # [B, nb]
        if layer < self.policy.dense_layers:
            keep = valid[:, None].expand(b, self.hk, self.num_blocks)
        else:
            q = query.reshape(b, self.hk, self.hq // self.hk, self.d)
            up = (q.clamp(min=0) @ kmax.transpose(-1, -2)).float() \
                + (q.clamp(max=0) @ kmin.transpose(-1, -2)).float()  # [B, Hk, G, nb]
            s = up.amax(2)
            base = self.q_base[:, None]
            s = s.masked_fill(base | ~valid[:, None], float("-inf"))
            top = s.topk(self.topk, dim=-1).indices  # [B, Hk, K], best first
            take = (self._rank[None, None] < self.q_extra[:, None, None]).expand_as(top)
            extra = torch.zeros_like(s, dtype=torch.bool).scatter_(-1, top, take)
            keep = base | extra
        self.mask.set_keep(keep)
        if self.account:
            per_block = (lengths[:, None] - self._blk_iota[None] * bs).clamp(0, bs)  # [B, nb]
            self.reads += (keep * per_block[:, None]).sum(-1).float().mean(1)

    # -- the step ----------------------------------------------------------------------------
    def _forward(self) -> torch.Tensor:
        out = self.model(input_ids=self.ids, position_ids=self.pos[:, None], use_cache=False)
        return out.logits[:, -1]

    def _capture(self) -> None:
        # a valid dummy state (prefill or fill_random overwrite what the warm-up writes)
        self.mask.set_blocks([[0]] * self.batch, [1] * self.batch)
        self._step_in.zero_()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(stream):
            for _ in range(3):
                self._step_fn()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph):
            self._logits = self._step_fn()
        self._graph = graph
        torch.cuda.synchronize()

    def run_step(self) -> torch.Tensor:
        """Run the decode forward for the state set by :meth:`plan_step`: logits ``[B, V]``."""
        if self._graph is not None:
            self._graph.replay()
            return self._logits  # type: ignore[return-value]
        with torch.no_grad(), self._attached():
            return self._step_fn()

    def set_tokens(self, tokens: Sequence[int]) -> None:
        """This step's input token per row; each is written at its row's current length - 1."""
        b = self.batch
        self._h_step[:b] = torch.as_tensor(list(tokens), dtype=torch.long)
        self._h_step[b:] = torch.as_tensor(self.lengths, dtype=torch.long) - 1
        self._step_in.copy_(self._h_step, non_blocking=True)

    def set_plan(self, blocks: Sequence[Sequence[int]]) -> None:
        """Kept blocks per row for this step (lengths already advanced)."""
        self.stage_plan(blocks, self.lengths)
        self.commit_plan()

    def stage_plan(self, blocks: Sequence[Sequence[int]], lengths: Sequence[int]) -> None:
        """Prepare a plan on the host (e.g. the next step's, while the GPU runs this one)."""
        self.mask.stage(blocks, lengths)
        self._staged_plan = (list(blocks), list(lengths))

    def commit_plan(self) -> None:
        """Send the staged plan to the device (before :meth:`run_step`)."""
        self.mask.commit()
        if self.quest:
            host_keep = self.mask.host_keep
            assert host_keep is not None
            blocks, lengths = self._staged_plan
            bs = self.config.block_size
            for b, (blk, n) in enumerate(zip(blocks, lengths)):
                nb = num_blocks(n, bs)
                self._h_extra[b] = max(0, min(nb, self.policy.budget_blocks(n, self.config)) - len(blk))
            self.q_base.copy_(host_keep, non_blocking=True)
            self.q_extra.copy_(self._h_extra, non_blocking=True)

    # -- cache setup -------------------------------------------------------------------------
    @torch.no_grad()
    def prefill(self, prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        """Run each prompt through the model into its cache row; next-token logits ``[B, V]``."""
        if len(prompts) != self.batch:
            raise ValueError(f"decoder built for {self.batch} rows, got {len(prompts)} prompts")
        rows = []
        with self._attached():
            for r, ids in enumerate(prompts):
                n = len(ids)
                if not 0 < n < self.max_len:
                    raise ValueError(f"row {r}: prompt of {n} tokens does not fit max_len "
                                     f"{self.max_len} (one position is needed to decode)")
                self.prefill_row = r
                try:
                    t = torch.as_tensor(list(ids), dtype=torch.long, device=self.device)[None]
                    out = self.model(input_ids=t, position_ids=torch.arange(n, device=self.device)[None],
                                     use_cache=False, logits_to_keep=1)
                finally:
                    self.prefill_row = None
                rows.append(out.logits[0, -1])
                self.lengths[r] = n
                if self.quest:
                    self._bounds(r, n)
        return torch.stack(rows)

    @torch.no_grad()
    def fill_random(self, lengths: Sequence[int], seed: int = 0) -> None:
        """Benchmarks: random K/V for ``lengths[b]`` tokens per row (no model prefill)."""
        gen = torch.Generator(device=self.device).manual_seed(seed)
        for layer in range(self.n_layers):
            for t in (self.k[layer], self.v[layer]):
                t.normal_(generator=gen)
        for r, n in enumerate(lengths):
            if not 0 < n < self.max_len:
                raise ValueError(f"row {r}: length {n} does not fit max_len {self.max_len}")
            self.lengths[r] = n
            if self.quest:
                self._bounds(r, n)

    def _bounds(self, r: int, n: int) -> None:
        """Quest block key bounds of row ``r`` from its first ``n`` cached tokens."""
        bs = self.config.block_size
        nb = num_blocks(n, bs)
        valid = (torch.arange(nb * bs, device=self.device) < n).view(1, nb, bs, 1)
        for layer in range(self.n_layers):
            kb = self.k[layer][r, :, : nb * bs].view(self.hk, nb, bs, self.d)
            self.kmin[layer][r, :, :nb] = kb.masked_fill(~valid, float("inf")).amin(2)
            self.kmax[layer][r, :, :nb] = kb.masked_fill(~valid, float("-inf")).amax(2)

    # -- generation ----------------------------------------------------------------------------
    def generate(self, tokenizer: Any, layouts: Sequence[PromptLayout], *, max_new_tokens: int = 64,
                 logits_processor: Any = None, record_blocks: bool = True,
                 keep_logits: bool = False, bound_sections: bool = True
                 ) -> list[GenerationResult]:
        """Greedy generation with the same results as the reference engine's ``generate``.

        ``logits_processor`` takes (ids so far, left-padded like ``model.generate``; scores)
        as in transformers; ``keep_logits`` stores each step's raw logits in ``step_logits``.
        ``bound_sections``: as in ``generate``, directive tokens naming a section a row's
        prompt lacks get -inf (one masked fill per step, on the device, before
        ``logits_processor``)."""
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        if len(layouts) != self.batch:
            raise ValueError(f"decoder built for {self.batch} rows, got {len(layouts)} layouts")
        for lay in layouts:
            if lay.prompt_len + max_new_tokens > self.max_len:
                raise ValueError(f"prompt of {lay.prompt_len} tokens + {max_new_tokens} new "
                                 f"tokens exceeds max_len {self.max_len}")
        cfg, bs = self.config, self.config.block_size
        traces = [SequenceTrace(lay, StreamingParser(lay.num_sections),
                                IncrementalDetokenizer(tokenizer)) for lay in layouts]
        eos = _eos_ids(self.model, tokenizer)
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        width = max(lay.prompt_len for lay in layouts)
        seqs: torch.Tensor | None = None
        if logits_processor is not None:
            seqs = torch.full((self.batch, width), pad, dtype=torch.long)
            for b, lay in enumerate(layouts):
                seqs[b, width - lay.prompt_len:] = torch.tensor(lay.input_ids)

        self.step_logits: list[torch.Tensor] = []
        bans = section_bans(tokenizer, layouts,
                            enabled=bound_sections and self.policy.reads_directives)
        banned: torch.Tensor | None = None

        def pick(logits: torch.Tensor) -> list[int]:
            nonlocal banned
            if keep_logits:
                self.step_logits.append(logits.float().cpu().clone())
            if bans is not None:
                if banned is None:
                    banned = ban_mask(bans, logits.shape[-1], logits.device)
                logits = logits.masked_fill(banned, float("-inf"))
            if seqs is None:
                return logits.argmax(-1).tolist()
            scores = logits_processor(seqs, logits.float().cpu())
            return scores.argmax(-1).tolist()

        toks = pick(self.prefill([lay.input_ids for lay in layouts]))
        unfinished = [True] * self.batch
        active = [True] * self.batch
        generated: list[list[int]] = [[] for _ in layouts]

        def emit(toks: list[int]) -> list[int]:
            nonlocal seqs
            out = []
            for b, t in enumerate(toks):
                t = t if unfinished[b] else pad
                generated[b].append(t)
                if t in eos:
                    unfinished[b] = False
                out.append(t)
            if seqs is not None:
                seqs = torch.cat([seqs, torch.tensor(out)[:, None]], dim=1)
            return out

        toks = emit(toks)
        self.plans_ahead = 0  # steps that used the plan made during the previous step
        spec: tuple[list[tuple], list[list[int]]] | None = None
        for _ in range(max_new_tokens - 1):
            if not any(unfinished):
                break
            keys = []
            states = []
            for b, (tr, tok) in enumerate(zip(traces, toks)):
                if active[b] and tok in eos:
                    active[b] = False
                    tr.finished = True
                if active[b]:
                    step = len(tr.detok.ids)  # the token's index, as the reference engine's
                    tr.parser.feed(tr.detok.push([tok]), step)
                self.lengths[b] += 1
                st = SequenceState(tr.layout, tr.parser.current, self.lengths[b],
                                   len(tr.detok.ids) - 1)
                states.append(st)
                keys.append((st.directive, st.length, st.step))
            if spec is not None and spec[0] == keys:  # planned while the last step ran
                blocks = spec[1]
                self.commit_plan()
                self.plans_ahead += 1
            else:
                blocks = [self.policy.plan(st, cfg) for st in states]
                self.set_plan(blocks)
            self.set_tokens(toks)
            if self.quest and self.account:
                self.reads.zero_()
            logits = self.run_step()  # asynchronous on GPU: plan the next step meanwhile,
            spec = None  # assuming its token completes no directive (it rarely does)
            if all(n < self.cache_len for n in self.lengths):
                nxt = [SequenceState(tr.layout, tr.parser.current, self.lengths[b] + 1,
                                     len(tr.detok.ids) - (0 if active[b] else 1))
                       for b, tr in enumerate(traces)]
                spec = ([(st.directive, st.length, st.step) for st in nxt],
                        [self.policy.plan(st, cfg) for st in nxt])
                self.stage_plan(spec[1], [st.length for st in nxt])
            toks = emit(pick(logits))
            reads = (self.reads / self.n_layers).tolist() if self.quest and self.account else None
            for b, tr in enumerate(traces):
                if not active[b]:
                    continue
                read = reads[b] if reads is not None else \
                    float(tokens_in_blocks(blocks[b], self.lengths[b], bs))
                tr.steps.append(StepRecord(len(tr.detok.ids) - 1, self.lengths[b], read))
                if record_blocks and not self.quest:
                    tr.blocks.append(blocks[b])
        results = []
        for tr, lay, gen in zip(traces, layouts, generated):
            for tok in gen[len(tr.detok.ids):]:
                if tok in eos:
                    break
                step = len(tr.detok.ids)
                tr.parser.feed(tr.detok.push([tok]), step)
            tail = tr.detok.flush()
            if tail:
                tr.parser.feed(tail, len(tr.detok.ids) - 1)
            tr.parser.finish(len(tr.detok.ids))
            tr.text = tokenizer.decode(tr.detok.ids, skip_special_tokens=True,
                                       clean_up_tokenization_spaces=False)
            results.append(GenerationResult(
                text=tr.text, answer=strip_directives(tr.text), events=list(tr.events),
                steps=list(tr.steps), blocks=list(tr.blocks), prompt_tokens=lay.prompt_len,
                generated_ids=list(tr.detok.ids)))
        return results

