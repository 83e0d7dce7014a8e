"""Policies: which KV blocks a decode step reads. One interface, one small class each.

A policy answers per sequence and per step through :meth:`Policy.plan` (from generation state:
the directive in force, the layout, the length). Query-aware policies (Quest, the oracle) also
refine that plan per layer and KV head in :meth:`Policy.select`, from the step's query and keys.
All policies run in the same engine and kernel, so their costs and accuracies compare directly.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch

from ..protocol.context import PromptLayout
from ..protocol.grammar import Directive
from .blocks import PlanConfig, normalize, num_blocks, plan_dac, span_blocks


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
    query_aware: ClassVar[bool] = False
    #: the plan depends on the model's directives; engines then bound focus directives to the
    #: prompt's sections (:mod:`dac.protocol.constraint`). Policies that ignore directives
    #: leave the model's text as it is, so they measure the unconstrained model.
    reads_directives: ClassVar[bool] = False

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
    reads_directives: ClassVar[bool] = True

    def plan(self, state: SequenceState, cfg: PlanConfig) -> list[int]:
        return plan_dac(state.directive, state.layout, state.length, cfg)


@dataclass
class StreamingPolicy(Policy):
    """StreamingLLM-style: attention sinks plus a recent window, whatever the model declares."""

    name: ClassVar[str] = "streaming"
    window: int | None = None  # defaults to PlanConfig.local_window

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


def _blocked(keys: torch.Tensor, bs: int, fill: float) -> torch.Tensor:
    hk, n, d = keys.shape
    nb = num_blocks(n, bs)
    pad = nb * bs - n
    if pad:
        keys = torch.cat([keys, keys.new_full((hk, pad, d), fill)], dim=1)
    return keys.view(hk, nb, bs, d)


@dataclass
class QuestPolicy(_BudgetPolicy):
    """Quest: per-block min/max key bounds; block score = sum_d max(q_d*min_d, q_d*max_d)."""

    name: ClassVar[str] = "quest"
    query_aware: ClassVar[bool] = True
    dense_layers: int = 2

    def scores(self, query, keys, cfg, scaling):
        hk = keys.shape[0]
        kf = keys.float()
        kmin = _blocked(kf, cfg.block_size, float("inf")).amin(dim=2)  # [Hk, nb, d]
        kmax = _blocked(kf, cfg.block_size, float("-inf")).amax(dim=2)
        q = query.float().view(hk, -1, query.shape[-1])  # [Hk, group, d]
        up = torch.maximum(q[:, :, None, :] * kmin[:, None], q[:, :, None, :] * kmax[:, None])
        return up.sum(-1).amax(dim=1)  # upper bound per block, max over the GQA group


@dataclass
class OraclePolicy(_BudgetPolicy):
    """Top blocks by true attention mass of this step's query (analysis only: reads everything)."""

    name: ClassVar[str] = "oracle"
    query_aware: ClassVar[bool] = True

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


def get_policy(spec: str | Policy, **kwargs: object) -> Policy:
    """A policy by name (``"quest"``) or with options (``"quest:budget=0.2,dense_layers=0"``)."""
    if isinstance(spec, Policy):
        return spec
    if "+" in str(spec).partition(":")[0]:  # a wrapper: "dac+safety" (see safety.py)
        from .safety import get_wrapped

        return get_wrapped(str(spec), **kwargs)
    name, _, opts = str(spec).partition(":")
    name = name.strip().lower()
    if name not in POLICIES:
        raise ValueError(f"unknown policy {spec!r}; choose from {', '.join(POLICIES)}")
    cls = POLICIES[name]
    allowed = {f.name: f.type for f in fields(cls)}
    params = dict(kwargs)
    for item in filter(None, (o.strip() for o in opts.split(","))):
        key, eq, val = item.partition("=")
        key = key.strip()
        if not eq or key not in allowed:
            raise ValueError(f"bad option {item!r} for policy {name!r}; "
                             f"options: {', '.join(allowed) or 'none'}")
        try:
            params[key] = float(val) if "." in val else int(val)
        except ValueError:
            raise ValueError(f"option {key!r} of policy {name!r} needs a number, got {val!r}") from None
        if isinstance(params[key], float) and "float" not in str(allowed[key]):
            raise ValueError(f"option {key!r} of policy {name!r} needs an integer, got {val!r}")
    try:
        policy = cls(**params)
    except TypeError as e:
        raise ValueError(f"bad options for policy {name!r}: {e}") from None
    for key in ("budget", "budget_tokens", "window", "dense_layers"):
        v = getattr(policy, key, None)
        if v is not None and v < 0 or (key == "budget" and v is not None and not 0 < v <= 1):
            raise ValueError(f"policy {name!r}: {key} out of range: {v}")
    return policy
