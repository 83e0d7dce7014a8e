"""A safety net against a wrong focus: widen to global when confidence drops after narrowing.

A model that declares the wrong region answers wrongly while reading less. The cheap signal
used here is the model's own next-token confidence (the top softmax probability): while the
directive in force is ``global``, the net keeps a short history of it; when a narrowing
directive (``focus`` or ``local``) takes effect, it watches the next ``horizon`` narrowed
steps, and if one of them is less than ``ratio`` times the mean of that history, it *fires*:
from the next step on, the sequence reads the whole cache (global) until the answer ends,
whatever the model declares afterwards.

Off by default; turned on as an explicit wrapper around any policy:
``SafetyNet(inner=DACPolicy(), ratio=0.4)``, or as the spec ``"dac+safety:ratio=0.4"``
(:mod:`dac.planning.spec`; options the wrapper does not own go to the inner policy:
``"quest+safety:budget=0.2,ratio=0.5"``). Whether and where it fired is reported per sequence
by :meth:`SafetyNet.report` (the engines put it in ``GenerationResult.policy_report``).

It requires :attr:`~dac.planning.policies.Capability.LOGITS`: an engine that hands it each
step's logits (:meth:`Policy.observe`), as the HF reference engine does. Engines without them
refuse it up front (:func:`~dac.planning.policies.check_policy`); one that never calls
``observe`` anyway gets a clear error instead of a net that silently never fires.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch

from ..protocol.grammar import Mode
from .blocks import PlanConfig, num_blocks
from .policies import Capability, DACPolicy, Policy, SequenceState

WRAPPER = "safety"


@dataclass
class _Row:
    """Per-sequence state of the net."""

    history: deque[float]  # confidences of the latest full-read (global) steps
    narrowed: bool = False  # the last plan for this row was narrowed (not global)
    directive: Any = None  # the narrowing directive being watched
    baseline: float | None = None  # mean confidence before the watched narrowing
    left: int = 0  # narrowed steps still watched
    step: int = -1  # the generation step of the last plan
    fired_at: int | None = None  # first step read globally because the net fired
    confidence: float | None = None  # the confidence that made it fire
    fired_baseline: float | None = None
    watched: int = 0  # narrowed steps whose confidence was compared
    switches: int = 0  # narrowings that were watched (a baseline existed)


@dataclass
class SafetyNet(Policy):
    """Wraps ``inner``; widens a sequence to global for the rest of its answer on a
    confidence drop right after a narrowing directive (see the module docstring)."""

    inner: Policy = field(default_factory=DACPolicy)
    ratio: float = 0.5  # fire when confidence < ratio * baseline ...
    horizon: int = 4  # ... in one of the first `horizon` narrowed steps after a switch
    history: int = 8  # full-read steps averaged into the baseline

    def __post_init__(self) -> None:
        if not isinstance(self.inner, Policy) or isinstance(self.inner, SafetyNet):
            raise ValueError("the safety net wraps one policy that is not itself a safety net")
        if isinstance(self.ratio, bool) or not isinstance(self.ratio, (int, float)) \
                or not 0 < self.ratio <= 1:
            raise ValueError(f"safety: ratio must be in (0, 1], got {self.ratio!r}")
        self.ratio = float(self.ratio)
        for key in ("horizon", "history"):
            v = getattr(self, key)
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"option {key!r} of '+{WRAPPER}' needs an integer, got {v!r}")
            if v < 1:
                raise ValueError("safety: horizon and history must be at least 1")
            setattr(self, key, v)
        self._rows: list[_Row] = []
        self._plans = 0
        self._observed = False

    # the wrapper is named for what it wraps: "dac+safety"
    @property  # type: ignore[override]
    def name(self) -> str:
        return f"{self.inner.name}+{WRAPPER}"

    @property  # type: ignore[override]
    def capabilities(self) -> frozenset[Capability]:
        # it watches the directive in force and the logits, whatever the inner policy plans
        return self.inner.capabilities | {Capability.LOGITS, Capability.DIRECTIVES}

    def spec(self) -> str:
        inner, _, opts = self.inner.spec().partition(":")
        own = [f"{k}={getattr(self, k)}" for k in OWN_OPTIONS
               if getattr(self, k) != SafetyNet.__dataclass_fields__[k].default]
        parts = [p for p in (opts, ",".join(own)) if p]
        return f"{inner}+{WRAPPER}" + (":" + ",".join(parts) if parts else "")

    # -- the Policy hooks ------------------------------------------------------------------
    def reset(self, batch_size: int) -> None:
        self.inner.reset(batch_size)
        self._rows = [_Row(deque(maxlen=self.history)) for _ in range(batch_size)]
        self._plans = 0
        self._observed = False

    def _row(self, row: int) -> _Row:
        while len(self._rows) <= row:  # an engine that skipped reset(): grow, never fail
            self._rows.append(_Row(deque(maxlen=self.history)))
        return self._rows[row]

    def plan(self, state: SequenceState, cfg: PlanConfig) -> list[int]:
        self._plans += 1
        if not self._observed and self._plans > 2 * max(1, len(self._rows)):
            raise RuntimeError("the safety net needs an engine that reports each step's logits "
                               "(Policy.observe); use the HF engine, or a policy without "
                               "'+safety'")
        r = self._row(state.row)
        r.step = state.step
        if r.fired_at is not None:
            r.narrowed = False
            return list(range(num_blocks(state.length, cfg.block_size)))
        narrowed = state.directive.mode is not Mode.GLOBAL
        if narrowed and (not r.narrowed or state.directive != r.directive):
            # a narrowing took effect at this step: watch it against the confidence before it
            r.directive = state.directive
            r.baseline = sum(r.history) / len(r.history) if r.history else None
            r.left = self.horizon if r.baseline is not None else 0
            r.switches += r.baseline is not None
        r.narrowed = narrowed
        if not narrowed:
            r.directive = None
        return self.inner.plan(state, cfg)

    def observe(self, row: int, logits: torch.Tensor) -> None:
        self._observed = True
        self.inner.observe(row, logits)
        r = self._row(row)
        if r.fired_at is not None:
            return
        conf = self.confidence(logits)
        if not r.narrowed:
            r.history.append(conf)
            return
        if r.left <= 0 or r.baseline is None:
            return
        r.left -= 1
        r.watched += 1
        if conf < self.ratio * r.baseline:
            r.fired_at = r.step + 1  # this step's logits are in; the next step reads globally
            r.confidence, r.fired_baseline = conf, r.baseline

    def confidence(self, logits: torch.Tensor) -> float:
        """The signal: top next-token probability (override for another, e.g. -entropy)."""
        return float(torch.softmax(logits.float(), dim=-1).max())

    def select(self, layer_idx: int, query: torch.Tensor, keys: torch.Tensor, base: list[int],
               cfg: PlanConfig, scaling: float) -> torch.Tensor | None:
        nb = num_blocks(keys.shape[1], cfg.block_size)
        if len(base) == nb:  # widened (or global): every head reads everything
            return None
        return self.inner.select(layer_idx, query, keys, base, cfg, scaling)

    # -- reporting -------------------------------------------------------------------------
    def fired(self, row: int) -> bool:
        return row < len(self._rows) and self._rows[row].fired_at is not None

    def report(self, row: int) -> dict[str, Any]:
        """What the net did for one sequence (JSON-ready)."""
        r = self._row(row)
        return {"safety": {
            "fired": r.fired_at is not None,
            "fired_at_step": r.fired_at,
            "confidence": None if r.confidence is None else round(r.confidence, 6),
            "baseline": None if r.fired_baseline is None else round(r.fired_baseline, 6),
            "narrowings_watched": r.switches,
            "steps_watched": r.watched,
            "ratio": self.ratio, "horizon": self.horizon,
        }}


#: the options the net owns (the rest of a spec's options go to the inner policy)
OWN_OPTIONS = ("ratio", "horizon", "history")
