"""Per-request DAC options carried by vLLM's ``SamplingParams.extra_args`` (``vllm_xargs``).

vLLM's OpenAI server accepts ``vllm_xargs`` values that are strings, numbers or flat lists of
them, so every option is a flat key (no nested objects)::

    {"dac": 1,                      # enable DAC for this request (any dac_* key also enables)
     "dac_policy": "dac",           # dac | full | streaming (query-aware policies: not here)
     "dac_block_size": 64,          # multiple of the engine's KV block size
     "dac_sink_tokens": 64, "dac_window": 256, "dac_local_window": 1024,
     "dac_keep_preamble": 1,
     "dac_sections": [s1, e1, s2, e2, ...],   # token spans of sections 1..N (half-open)
     "dac_preamble": [s, e],                  # optional; default [0, start of section 1]
     "dac_protected": [s, e, ...],           # optional; default [end of last section, prompt end]
     "dac_bound_sections": 1,                # section-bounded decoding (default on)
     "dac_protocol": "brackets"}             # the prompt's protocol: brackets | da | vanilla

Spans are token offsets in the request's prompt token ids. Without ``dac_sections`` the layout
is rebuilt from the ``[S1]``, ``[S2]``... markers of the prompt (see :mod:`.layout`).
``dac_bound_sections`` is read by the front end, not the worker: for policies that read
directives it turns the directive tokens naming a missing section into a request's
``allowed_token_ids`` complement (:func:`bounded_allowed_ids`, :mod:`dac.protocol.constraint`).
This module imports nothing from vLLM: the server validates requests with it before they reach
the engine, and the worker parses the same dictionary, so both sides agree by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...planning import Capability, Policy, UnsupportedPolicyError, check_policy, get_policy
from ...planning.blocks import PlanConfig
from ...protocol.base import PROTOCOLS
from ...protocol.context import PromptLayout, Span
from .errors import DACOptionError
from .layout import layout_from_markers

KEYS = ("dac", "dac_policy", "dac_block_size", "dac_sink_tokens", "dac_window",
        "dac_local_window", "dac_keep_preamble", "dac_sections", "dac_preamble",
        "dac_protected", "dac_bound_sections", "dac_protocol")
_INT_KEYS = {"dac_block_size": "block_size", "dac_sink_tokens": "sink_tokens",
             "dac_window": "window", "dac_local_window": "local_window"}


#: what the vLLM engine computes: plans from directives (no per-head selection, no logits)
SUPPORTS = frozenset({Capability.DIRECTIVES})
HINT = "the vLLM engine supports dac, full and streaming"

__all__ = ["KEYS", "DACOptionError", "DACOptions", "bounded_allowed_ids", "is_dac_request",
           "parse_options", "to_extra_args"]


@dataclass
class DACOptions:
    """The validated DAC request: policy, plan configuration and (optional) explicit spans."""

    policy: Policy
    config: PlanConfig
    sections: list[Span] | None = None
    preamble: Span | None = None
    protected: list[Span] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    bound_sections: bool = True  # section-bounded decoding (front end; see the module doc)
    protocol: str = "brackets"  # which parser reads the generated text (dac.protocol.base)

    def layout(self, prompt_ids: list[int], tokenizer: Any = None) -> PromptLayout:
        """The request's :class:`PromptLayout` (explicit spans, or rebuilt from markers)."""
        n = len(prompt_ids)
        if self.sections is None:
            if tokenizer is None:
                raise DACOptionError("dac_sections not given and no tokenizer to find the "
                                     "[S1], [S2]... markers of the prompt")
            if self.protocol != "brackets":
                raise DACOptionError(f"a {self.protocol} prompt needs dac_sections (the token "
                                     "spans of its chunks); only brackets markers are found "
                                     "in the text")
            return layout_from_markers(tokenizer, prompt_ids)
        for s in [*self.sections, *(self.protected or []), *([self.preamble] if self.preamble else [])]:
            if s.end > n:
                raise DACOptionError(f"span [{s.start}, {s.end}) lies beyond the prompt "
                                     f"({n} tokens)")
        secs = list(self.sections)
        first = secs[0].start if secs else n
        preamble = self.preamble if self.preamble is not None else Span(0, first)
        if self.protected is not None:
            protected = list(self.protected)
        else:
            protected = [Span(secs[-1].end, n)] if secs else []
        return PromptLayout(list(prompt_ids), secs, preamble, protected, protocol=self.protocol)


def is_dac_request(extra_args: dict[str, Any] | None) -> bool:
    """Whether a request's ``extra_args`` ask for DAC (``dac`` truthy or any ``dac_*`` key)."""
    if not extra_args:
        return False
    if "dac" in extra_args:
        return _truthy(extra_args["dac"], "dac")
    return any(k.startswith("dac_") for k in extra_args)


def _truthy(v: Any, key: str) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return v.strip().lower() in ("1", "true", "yes", "on")
    raise DACOptionError(f"{key} must be 0/1 or true/false, got {v!r}")


def _int(v: Any, key: str) -> int:
    if isinstance(v, bool):
        raise DACOptionError(f"{key} must be an integer, got {v!r}")
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            pass
    raise DACOptionError(f"{key} must be an integer, got {v!r}")


def _spans(v: Any, key: str, single: bool = False) -> list[Span]:
    if not isinstance(v, (list, tuple)):
        raise DACOptionError(f"{key} must be a flat list of token offsets [start, end, ...]")
    nums = [_int(x, key) for x in v]
    if len(nums) % 2 or (single and len(nums) != 2):
        raise DACOptionError(f"{key} must hold {'one' if single else 'pairs of'} "
                             f"[start, end) offsets, got {len(nums)} numbers")
    out = []
    for a, b in zip(nums[::2], nums[1::2]):
        if a < 0 or b < a:
            raise DACOptionError(f"{key}: bad span [{a}, {b}) (need 0 <= start <= end)")
        out.append(Span(a, b))
    return out


def parse_options(extra_args: dict[str, Any] | None, *, kernel_block_size: int | None = None
                  ) -> DACOptions | None:
    """Validate a request's DAC options; ``None`` when the request does not use DAC.

    Raises :class:`DACOptionError` with a message fit for an HTTP 400 answer."""
    if not is_dac_request(extra_args):
        return None
    assert extra_args is not None
    unknown = [k for k in extra_args if k.startswith("dac_") and k not in KEYS]
    if unknown:
        raise DACOptionError(f"unknown DAC option(s) {', '.join(sorted(unknown))}; "
                             f"known: {', '.join(KEYS)}")
    spec = extra_args.get("dac_policy", "dac")
    if not isinstance(spec, str):
        raise DACOptionError(f"dac_policy must be a string, got {spec!r}")
    try:
        policy = get_policy(spec)
        check_policy(policy, SUPPORTS, engine="vllm", hint=HINT)
    except UnsupportedPolicyError as e:  # "dac_policy 'quest' is query-aware ...; the vLLM ..."
        raise DACOptionError(f"dac_policy {e.policy_name!r} {e.reason}; {e.hint}") from None
    except ValueError as e:
        raise DACOptionError(f"dac_policy: {e}") from None
    kw: dict[str, Any] = {}
    for key, name in _INT_KEYS.items():
        if key in extra_args:
            kw[name] = _int(extra_args[key], key)
    if "dac_keep_preamble" in extra_args:
        kw["keep_preamble"] = _truthy(extra_args["dac_keep_preamble"], "dac_keep_preamble")
    if kernel_block_size is not None:
        kw.setdefault("block_size", kernel_block_size)
    try:
        cfg = PlanConfig(**kw)
    except ValueError as e:
        raise DACOptionError(f"DAC options: {e}") from None
    if kernel_block_size is not None and cfg.block_size % kernel_block_size:
        raise DACOptionError(f"dac_block_size {cfg.block_size} must be a multiple of the "
                             f"engine's KV block size {kernel_block_size}")
    sections = _spans(extra_args["dac_sections"], "dac_sections") \
        if "dac_sections" in extra_args else None
    if sections is not None:
        for a, b in zip(sections, sections[1:]):
            if b.start < a.end:
                raise DACOptionError("dac_sections must be in order and not overlap")
    preamble = _spans(extra_args["dac_preamble"], "dac_preamble", single=True)[0] \
        if "dac_preamble" in extra_args else None
    protected = _spans(extra_args["dac_protected"], "dac_protected") \
        if "dac_protected" in extra_args else None
    if sections is None and (preamble is not None or protected is not None):
        raise DACOptionError("dac_preamble / dac_protected need dac_sections")
    bound = _truthy(extra_args["dac_bound_sections"], "dac_bound_sections") \
        if "dac_bound_sections" in extra_args else True
    protocol = extra_args.get("dac_protocol", "brackets")
    if protocol not in PROTOCOLS:
        raise DACOptionError(f"dac_protocol must be one of {', '.join(sorted(PROTOCOLS))}, "
                             f"got {protocol!r}")
    return DACOptions(policy, cfg, sections, preamble, protected, dict(extra_args), bound,
                      protocol)


def bounded_allowed_ids(banned: frozenset[int], vocab_size: int,
                        allowed: list[int] | None = None) -> list[int] | None:
    """A request's ``allowed_token_ids`` under section-bounded decoding: ``allowed`` (or the
    whole vocabulary) without ``banned``. ``None`` when nothing changes, or when nothing would
    be left of a caller's own list (vLLM refuses an empty one; the parser's fallback remains).

    vLLM masks the complement with -inf after computing the raw log-probabilities it reports
    and before any logits processor, as the Hugging Face engine's bound does."""
    if not banned:
        return None
    base = range(vocab_size) if allowed is None else allowed
    out = [int(t) for t in base if int(t) not in banned]
    return out or None


def to_extra_args(layout: PromptLayout, config: PlanConfig, policy: str | Policy = "dac",
                  bound_sections: bool = True) -> dict[str, Any]:
    """The ``extra_args`` that carry ``layout`` and ``config`` to the engine for one request."""
    pol = get_policy(policy)
    try:
        check_policy(pol, SUPPORTS, engine="vllm", hint=HINT)
    except UnsupportedPolicyError as e:
        raise DACOptionError(str(e)) from None
    flat = lambda spans: [x for s in spans for x in (s.start, s.end)]  # noqa: E731
    return {
        "dac": 1, "dac_policy": pol.spec(), "dac_block_size": config.block_size,
        "dac_sink_tokens": config.sink_tokens, "dac_window": config.window,
        "dac_local_window": config.local_window, "dac_keep_preamble": int(config.keep_preamble),
        "dac_sections": flat(layout.sections), "dac_preamble": flat([layout.preamble]),
        "dac_protected": flat(layout.protected), "dac_bound_sections": int(bound_sections),
        "dac_protocol": layout.protocol,
    }
