"""Policies: which KV blocks a decode step reads. One interface, one small class each.

A policy answers per sequence and per step through :meth:`Policy.plan` (from generation state:
the directive in force, the layout, the length). Query-aware policies (Quest, the oracle) also
refine that plan per layer and KV head in :meth:`Policy.select`, from the step's query and keys.
All policies run in the same engine and kernel, so their costs and accuracies compare directly.

What an engine must provide for a policy is asked of the policy once (:meth:`Policy.requires`
with a :class:`Capability`; :func:`check_policy` refuses with the reason). Strings such as
``"quest:budget=0.2"`` are parsed at the edges, by :mod:`dac.planning.spec`.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..protocol.context import PromptLayout
from ..protocol.grammar import Directive
from ..kernels.quest import block_bounds, upper_bound
from .blocks import PlanConfig, normalize, num_blocks, plan_dac, span_blocks


class Capability(str, enum.Enum):
    """What a policy needs from the engine that runs it."""

    #: the plan follows the model's declarations (engines then bound focus directives to the
    #: prompt's sections, :mod:`dac.protocol.constraint`)
    DIRECTIVES = "directives"
    #: :meth:`Policy.observe` with each decode step's logits (the safety net)
    LOGITS = "logits"
    #: per-layer, per-KV-head selection from per-block key bounds (Quest)
    BLOCK_BOUNDS = "block_bounds"
    #: per-layer selection that reads every key (the oracle; analysis only)
    KEYS = "keys"


class UnsupportedPolicyError(ValueError):
    """An engine cannot run a policy (it lacks a capability the policy requires).

    The parts of the message are kept, so a front end can word it its own way (vLLM's
    request options say ``dac_policy 'quest' is query-aware ...``)."""

    def __init__(self, policy_name: str, capability: Capability, engine: str, hint: str) -> None:
        self.policy_name, self.capability = policy_name, capability
        self.engine, self.hint = engine, hint
        self.reason = _NEEDS[capability]
        super().__init__(f"policy {policy_name!r} {self.reason}; {hint}")

    def __reduce__(self) -> tuple[Any, ...]:  # survives pickling (worker processes)
        return type(self), (self.policy_name, self.capability, self.engine, self.hint)


#: why an engine without a capability refuses a policy that requires it
_NEEDS = {
    Capability.DIRECTIVES: "reads the model's directives",
    Capability.LOGITS: "needs each step's logits",
    Capability.BLOCK_BOUNDS: "is query-aware (per-head block scores)",
    Capability.KEYS: "is query-aware (per-head block scores) and reads every key to choose "
                     "blocks (analysis only)",
}


@dataclass
class SequenceState:
    """What a policy may look at for one sequence at one decode step."""

    layout: PromptLayout
    directive: Directive
    length: int  # KV tokens in the cache after this step's write (logical positions)
    step: int  # generated tokens before this one
    row: int = 0  # the sequence's row in the batch (key for per-sequence policy state)


@dataclass
class Policy(ABC):
    """Base: reads everything. Subclasses override :meth:`plan` and, if query-aware, :meth:`select`."""

    name: ClassVar[str] = "full"
    #: what the policy needs from its engine; policies without ``DIRECTIVES`` leave the
    #: model's text as it is, so they measure the unconstrained model
    capabilities: ClassVar[frozenset[Capability]] = frozenset()

    def __post_init__(self) -> None:
        """Validate the options (each policy checks its own)."""

    def requires(self, capability: Capability) -> bool:
        """Whether an engine must provide ``capability`` to run this policy (ask this, not the
        class: a wrapper declares what it and its inner policy need together)."""
        return capability in self.capabilities

    @property
    def query_aware(self) -> bool:
        """Plans are refined per layer and KV head through :meth:`select`."""
        return self.requires(Capability.BLOCK_BOUNDS) or self.requires(Capability.KEYS)

    @property
    def reads_directives(self) -> bool:
        """The plan follows the model's declarations (engines bound focus to the sections)."""
        return self.requires(Capability.DIRECTIVES)

    def spec(self) -> str:
        """The string :func:`dac.planning.spec.parse_policy` maps back to an equal policy
        (options that differ from their defaults only): ``"quest:budget=0.2"``."""
        opts = [f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self)
                if f.init and getattr(self, f.name) != _default(f)]
        return self.name + (":" + ",".join(opts) if opts else "")

    def reset(self, batch_size: int) -> None:
        """Called at the start of each generation (prefill); per-sequence state goes here."""

    def plan(self, state: SequenceState, cfg: PlanConfig) -> list[int]:
        return list(range(num_blocks(state.length, cfg.block_size)))

    def observe(self, row: int, logits: torch.Tensor) -> None:
        """The next-token logits ``[vocab]`` a decode step produced for ``row`` (after it ran).
        Policies that react to the model's confidence override this; the default ignores it."""

    def report(self, row: int) -> dict[str, Any]:
        """Per-sequence facts the policy wants in the result (e.g. a safety net firing)."""
        return {}

    def select(self, layer_idx: int, query: torch.Tensor, keys: torch.Tensor, base: list[int],
               cfg: PlanConfig, scaling: float) -> torch.Tensor | None:
        """Per-KV-head keep mask ``[Hk, n_blocks]`` (bool) for one sequence, or ``None`` to use
        ``base`` for every head. ``query`` is ``[H, d]``, ``keys`` ``[Hk, length, d]``."""
        return None


@dataclass
class FullPolicy(Policy):
    """Full attention: the reference every other policy is measured against."""

    name: ClassVar[str] = "full"


@dataclass
class DACPolicy(Policy):
    """The model's own declarations decide (see :func:`~dac.planning.blocks.plan_dac`)."""

    name: ClassVar[str] = "dac"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.DIRECTIVES})

    def plan(self, state: SequenceState, cfg: PlanConfig) -> list[int]:
        return plan_dac(state.directive, state.layout, state.length, cfg)


@dataclass
class StreamingPolicy(Policy):
    """StreamingLLM-style: attention sinks plus a recent window, whatever the model declares."""

    name: ClassVar[str] = "streaming"
    window: int | None = None  # defaults to PlanConfig.local_window

    def __post_init__(self) -> None:
        _check_int(self, "window", minimum=0, optional=True)

    def plan(self, state: SequenceState, cfg: PlanConfig) -> list[int]:
        bs, n = cfg.block_size, state.length
        w = self.window or cfg.local_window
        kept = set(span_blocks(0, cfg.sink_tokens, n, bs)) | set(span_blocks(n - w, n, n, bs))
        return normalize(kept, n, bs)


@dataclass
class _BudgetPolicy(Policy):
    """Shared by the query-aware policies: sinks + tail forced, top blocks up to a budget."""

    budget: float = 0.1  # fraction of the current length ...
    budget_tokens: int | None = None  # ... or a fixed token budget, which wins when set
    dense_layers: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.budget, bool) or not isinstance(self.budget, (int, float)) \
                or not 0 < self.budget <= 1:
            raise ValueError(f"policy {self.name!r}: budget out of range: {self.budget}")
        self.budget = float(self.budget)
        _check_int(self, "budget_tokens", minimum=0, optional=True)
        _check_int(self, "dense_layers", minimum=0)

    def plan(self, state: SequenceState, cfg: PlanConfig) -> list[int]:
        n = state.length
        return normalize(span_blocks(0, cfg.sink_tokens, n, cfg.block_size), n, cfg.block_size)

    def budget_blocks(self, length: int, cfg: PlanConfig) -> int:
        tokens = self.budget_tokens if self.budget_tokens is not None else self.budget * length
        return max(1, math.ceil(tokens / cfg.block_size))

    @abstractmethod
    def scores(self, query: torch.Tensor, keys: torch.Tensor, cfg: PlanConfig,
               scaling: float) -> torch.Tensor:
        """Block scores ``[Hk, n_blocks]``: higher means more worth reading."""

    def select(self, layer_idx: int, query: torch.Tensor, keys: torch.Tensor, base: list[int],
               cfg: PlanConfig, scaling: float) -> torch.Tensor | None:
        hk, n, _ = keys.shape
        nb = num_blocks(n, cfg.block_size)
        keep = torch.zeros(hk, nb, dtype=torch.bool, device=keys.device)
        if layer_idx < self.dense_layers:
            keep[:] = True
            return keep
        keep[:, base] = True
        k = min(nb, self.budget_blocks(n, cfg)) - len(base)
        if k > 0:
            s = self.scores(query, keys, cfg, scaling).float()  # [Hk, nb]
            s = s.masked_fill(keep, float("-inf"))
            top = s.topk(k, dim=-1).indices
            keep.scatter_(1, top, True)
        return keep


@dataclass
class QuestPolicy(_BudgetPolicy):
    """Quest: per-block min/max key bounds; block score = sum_d max(q_d*min_d, q_d*max_d)."""

    name: ClassVar[str] = "quest"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.BLOCK_BOUNDS})
    dense_layers: int = 2

    def scores(self, query, keys, cfg, scaling):
        kmin, kmax = block_bounds(keys.float(), cfg.block_size)  # [Hk, nb, d]
        q = query.float().view(keys.shape[0], -1, query.shape[-1])  # [Hk, group, d]
        return upper_bound(q, kmin, kmax).amax(dim=1)  # per block, max over the GQA group


@dataclass
class OraclePolicy(_BudgetPolicy):
    """Top blocks by true attention mass of this step's query (analysis only: reads everything)."""

    name: ClassVar[str] = "oracle"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.KEYS})

    def scores(self, query, keys, cfg, scaling):
        hk, n, d = keys.shape
        q = query.float().view(hk, -1, d)
        p = torch.softmax(torch.einsum("hgd,hnd->hgn", q, keys.float()) * scaling, dim=-1)
        nb = num_blocks(n, cfg.block_size)
        p = torch.nn.functional.pad(p, (0, nb * cfg.block_size - n))
        return p.view(hk, q.shape[1], nb, cfg.block_size).sum(-1).sum(1)


POLICIES: dict[str, type[Policy]] = {
    cls.name: cls for cls in (FullPolicy, DACPolicy, StreamingPolicy, QuestPolicy, OraclePolicy)
}


def check_policy(policy: Policy, supported: Iterable[Capability], *, engine: str,
                 hint: str) -> None:
    """Raise :class:`UnsupportedPolicyError` naming the first capability (in the order of
    :class:`Capability`) the policy requires that ``engine`` lacks: one check, up front, instead
    of each engine asking policies its own questions. ``hint`` says what the engine can run."""
    have = set(supported)
    for cap in Capability:
        if policy.requires(cap) and cap not in have:
            raise UnsupportedPolicyError(policy.name, cap, engine, hint)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def _check_int(policy: Policy, key: str, *, minimum: int, optional: bool = False) -> None:
    v = getattr(policy, key)
    if v is None and optional:
        return
    if isinstance(v, float) and v.is_integer():
        v = int(v)
        setattr(policy, key, v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"option {key!r} of policy {policy.name!r} needs an integer, got {v!r}")
    if v < minimum:
        raise ValueError(f"policy {policy.name!r}: {key} out of range: {v}")
