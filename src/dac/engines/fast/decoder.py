"""``FastDecoder``: greedy decoding of one batch shape on the static-cache, graph-captured step.

``FastDecoder(model, batch_size=1, max_len=131072, policy="dac").generate(tok, layouts)``

It computes what the reference engine (:func:`dac.engines.hf.generate`) computes: the same
decode runtime (:class:`dac.runtime.BatchRuntime`: parser, planner, accounting) drives it, and
only the forward differs (:class:`.static.StaticStep`). On a GPU the host plans the next step
while the device runs this one (:meth:`~dac.runtime.BatchRuntime.plan_ahead`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ...planning import Capability, Policy, QuestPolicy, check_policy, get_policy
from ...planning.blocks import PlanConfig
from ...protocol.constraint import ban_mask, section_bans
from ...protocol.context import PromptLayout, Span
from ...runtime import BatchRuntime, GenerationResult, Sampling, check_fits, model_eos_ids
from ..support import check_supported, model_costs, pad_token_id
from .quest import DeviceQuest
from .static import LayerCaches, StaticStep

#: what the fast engine computes: plans from directives, and Quest's per-head selection
#: (on the device); not the oracle (it reads every key) nor the logits a safety net watches
SUPPORTS = (Capability.DIRECTIVES, Capability.BLOCK_BOUNDS)
HINT = "use the reference engine (dac.engines.hf.generate)"


class FastDecoder:
    """Static-cache, block-sparse, graph-captured greedy decoding of one batch shape.

    One decoder serves many generations of up to ``batch_size`` rows and ``max_len`` tokens
    each. ``kv`` lets several decoders (e.g. one per policy) share one cache (a hybrid's
    global caches and sliding rings; its linear layers' states stay per decoder).

    Hybrids run too: only full-attention layers read the kept blocks (and are counted);
    sliding-window layers read their window from a ring, Gated DeltaNet layers their state.
    """

    def __init__(self, model: Any, *, batch_size: int, max_len: int,
                 policy: str | Policy = "dac", config: PlanConfig | None = None,
                 cuda_graph: bool | None = None, compile_model: bool = False,
                 account: bool = True,
                 kv: tuple[LayerCaches, LayerCaches] | None = None):
        check_supported(model, engine="the fast engine", sinks=False)
        self.model = model
        self.policy = get_policy(policy)
        check_policy(self.policy, SUPPORTS, engine="fast", hint=HINT)
        self.config = config or PlanConfig()
        quest = isinstance(self.policy, QuestPolicy)
        self.step = StaticStep(model, batch_size=batch_size, max_len=max_len,
                               block_size=self.config.block_size, per_head=quest,
                               cuda_graph=cuda_graph, compile_model=compile_model, kv=kv)
        s = self.step
        if quest:
            s.quest = DeviceQuest(self.policy, self.config, batch=batch_size, layers=s.global_ids,
                                  kv_heads=s.hk, query_heads=s.hq, head_dim=s.d,
                                  num_blocks=s.num_blocks, max_len=max_len, dtype=s.dtype,
                                  device=s.device, account=account)
        self.account = account
        self.batch, self.max_len, self.k, self.v = batch_size, max_len, s.k, s.v
        self.lengths = [0] * batch_size
        self.costs = model_costs(model)
        self.plans_ahead = 0  # steps that used the plan made during the previous step
        self.step_logits: list[torch.Tensor] = []
        self._staged: tuple[list[list[int]], list[int]] | None = None
        if s.use_graph:
            s.capture()

    @property
    def quest(self) -> bool:
        return self.step.quest is not None

    # -- the host side of one step -----------------------------------------------------------
    def set_tokens(self, tokens: Sequence[int]) -> None:
        """This step's input token per row; each is written at its row's current length - 1."""
        self.step.set_tokens(tokens, self.lengths)

    def set_plan(self, blocks: Sequence[Sequence[int]]) -> None:
        """Kept blocks per row for this step (lengths already advanced)."""
        self.stage_plan(blocks, self.lengths)
        self.commit_plan()

    def stage_plan(self, blocks: Sequence[Sequence[int]], lengths: Sequence[int]) -> None:
        """Prepare a plan on the host (e.g. the next step's, while the GPU runs this one)."""
        self.step.mask.stage(blocks, lengths)
        self._staged = ([list(b) for b in blocks], list(lengths))

    def commit_plan(self) -> None:
        """Send the staged plan to the device (before :meth:`run_step`)."""
        self.step.mask.commit()
        if self.step.quest is not None and self._staged is not None:
            host_keep = self.step.mask.host_keep
            assert host_keep is not None
            self.step.quest.stage(*self._staged, host_keep)

    def run_step(self) -> torch.Tensor:
        """Run the decode forward for the committed plan and tokens: logits ``[B, V]``."""
        if self.step.quest is not None and self.account:
            self.step.quest.reads.zero_()
        return self.step.run()

    def prefill(self, prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        logits = self.step.prefill(prompts)
        self.lengths = [len(p) for p in prompts]
        return logits

    def fill_random(self, lengths: Sequence[int], seed: int = 0) -> None:
        self.step.fill_random(lengths, seed)
        self.lengths = list(lengths)

    def _reads(self) -> list[float] | None:
        q = self.step.quest
        # averaged over the layers that read the kept blocks, as the reference engine does
        n = len(self.step.global_ids)
        return (q.reads / n).tolist() if q is not None and self.account else None

    # -- generation ----------------------------------------------------------------------------
    def generate(self, tokenizer: Any, layouts: Sequence[PromptLayout], *, max_new_tokens: int = 64,
                 evidence: Sequence[Sequence[Span]] | None = None, logits_processor: Any = None,
                 record_blocks: bool = True, keep_logits: bool = False,
                 bound_sections: bool = True, sampling: Sampling | None = None
                 ) -> list[GenerationResult]:
        """The reference engine's ``generate`` on the static step (greedy: the same results).

        ``logits_processor`` takes (ids so far, left-padded like ``model.generate``; scores)
        as in transformers; ``keep_logits`` stores each step's raw logits in ``step_logits``;
        ``bound_sections`` as in ``generate`` (one masked fill per step, on the device);
        ``sampling``: greedy by default."""
        if len(layouts) != self.batch:
            raise ValueError(f"decoder built for {self.batch} rows, got {len(layouts)} layouts")
        check_fits(list(layouts), max_new_tokens, self.max_len, "max_len {limit}")
        eos = model_eos_ids(self.model, tokenizer)
        rt = BatchRuntime(layouts, tokenizer, eos, self.policy, self.config, evidence,
                          record_blocks and not self.quest, self.costs)
        self.step_logits = []
        pick = _Picker(tokenizer, layouts, eos, bound_sections and self.policy.reads_directives,
                       logits_processor, self.step_logits if keep_logits else None,
                       Sampling.of(sampling), self.step.device)
        self.plans_ahead = 0
        toks = pick(self.prefill([lay.input_ids for lay in layouts]))
        rt.start(self.lengths)
        for _ in range(max_new_tokens - 1):
            if pick.done:
                break
            plans = rt.advance(toks)
            self.lengths = list(rt.lengths)
            if rt.reused:
                self.commit_plan()
                self.plans_ahead += 1
            else:
                self.set_plan(plans)
            self.set_tokens(toks)
            logits = self.run_step()  # asynchronous on a GPU: plan the next step meanwhile
            if max(rt.lengths) < self.step.cache_len:
                self.stage_plan(*rt.plan_ahead())
            measured = self.step.quest is not None and self.account
            if not measured:  # accounted from the plans, also while the forward runs
                rt.record()
            toks = pick(logits)
            if measured:  # Quest's reads are known once the step has run
                rt.record(self._reads())
        return rt.results(pick.generated)


class _Picker:
    """Token choice (:class:`~dac.runtime.Sampling`) after the section bound and an optional
    ``logits_processor``; keeps the generated ids (padding rows that have finished, as
    ``model.generate`` does)."""

    def __init__(self, tokenizer: Any, layouts: Sequence[PromptLayout], eos: set[int],
                 bound: bool, processor: Any, keep: list[torch.Tensor] | None,
                 sampling: Sampling, device: torch.device):
        self.bans = section_bans(tokenizer, list(layouts), enabled=bound)
        self.banned: torch.Tensor | None = None
        self.processor, self.keep = processor, keep
        self.sampling = sampling
        self.rng = sampling.generator(device if processor is None else "cpu")
        self.pad = pad_token_id(tokenizer)
        self.eos = eos
        self.generated: list[list[int]] = [[] for _ in layouts]
        self.unfinished = [True] * len(layouts)
        self.seqs: torch.Tensor | None = None
        if processor is not None:
            width = max(lay.prompt_len for lay in layouts)
            self.seqs = torch.full((len(layouts), width), self.pad, dtype=torch.long)
            for b, lay in enumerate(layouts):
                self.seqs[b, width - lay.prompt_len:] = torch.tensor(lay.input_ids)

    @property
    def done(self) -> bool:
        return not any(self.unfinished)

    def __call__(self, logits: torch.Tensor) -> list[int]:
        if self.keep is not None:
            self.keep.append(logits.float().cpu().clone())
        if self.bans is not None:
            if self.banned is None:
                self.banned = ban_mask(self.bans, logits.shape[-1], logits.device)
            logits = logits.masked_fill(self.banned, float("-inf"))
        if self.seqs is not None:
            logits = self.processor(self.seqs, logits.float().cpu())
        toks = [t if self.unfinished[b] else self.pad
                for b, t in enumerate(self.sampling.choose(logits, self.generated, self.rng))]
        for b, t in enumerate(toks):
            self.generated[b].append(t)
            if t in self.eos:
                self.unfinished[b] = False
        if self.seqs is not None:
            self.seqs = torch.cat([self.seqs, torch.tensor(toks)[:, None]], dim=1)
        return toks
