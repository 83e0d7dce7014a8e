"""Policy specs: the strings users write (``dac``, ``quest:budget=0.2,dense_layers=0``,
``dac+safety:ratio=0.4``) parsed into policy objects, in one place.

The CLI, the HTTP server and the evaluation config parse here; engines receive objects
(:func:`get_policy` also passes an object through unchanged, so Python callers may write
either). :meth:`~dac.planning.policies.Policy.spec` is the inverse.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .policies import POLICIES, Policy
from .safety import OWN_OPTIONS, WRAPPER, SafetyNet


def _number(key: str, val: str, owner: str) -> float | int:
    try:
        return float(val) if "." in val or "e" in val.lower() else int(val)
    except ValueError:
        raise ValueError(f"option {key!r} of {owner} needs a number, got {val!r}") from None


def _options(opts: str) -> list[tuple[str, str, str]]:
    out = []
    for item in filter(None, (o.strip() for o in opts.split(","))):
        key, eq, val = item.partition("=")
        out.append((item, key.strip() if eq else "", val.strip()))
    return out


def _base(name: str, options: list[tuple[str, str, str]], spec: str) -> Policy:
    name = name.strip().lower()
    if name not in POLICIES:
        raise ValueError(f"unknown policy {spec!r}; choose from {', '.join(POLICIES)}")
    cls = POLICIES[name]
    allowed = {f.name: f.type for f in dataclasses.fields(cls) if f.init}
    params: dict[str, Any] = {}
    for item, key, val in options:
        if key not in allowed:
            raise ValueError(f"bad option {item!r} for policy {name!r}; "
                             f"options: {', '.join(allowed) or 'none'}")
        params[key] = _number(key, val, f"policy {name!r}")
        if isinstance(params[key], float) and "float" not in str(allowed[key]):
            raise ValueError(f"option {key!r} of policy {name!r} needs an integer, got {val!r}")
    return cls(**params)


def parse_policy(spec: str) -> Policy:
    """A policy from its spec: a name (``"quest"``), options after a colon
    (``"quest:budget=0.2,dense_layers=0"``), and the safety-net wrapper (``"dac+safety"``,
    ``"quest+safety:budget=0.2,ratio=0.5"``: the options the net owns, ``ratio``, ``horizon``
    and ``history``, are its own; the rest go to the inner policy). Raises ``ValueError``."""
    head, _, opts = str(spec).partition(":")
    inner, *wrappers = [p.strip().lower() for p in head.split("+")]
    options = _options(opts)
    if not wrappers:
        return _base(inner, options, spec)
    if wrappers != [WRAPPER]:
        if len(wrappers) > 1 and set(wrappers) == {WRAPPER}:
            raise ValueError(f"{spec!r}: the safety net wraps a policy once")
        raise ValueError(f"unknown policy wrapper in {spec!r}; the one wrapper is "
                         f"'+{WRAPPER}' (e.g. 'dac+{WRAPPER}')")
    own = {key: _number(key, val, f"'+{WRAPPER}'") for _, key, val in options
           if key in OWN_OPTIONS}
    rest = [o for o in options if o[1] not in OWN_OPTIONS]
    return SafetyNet(_base(inner, rest, spec), **own)


def get_policy(spec: str | Policy) -> Policy:
    """``spec`` parsed (:func:`parse_policy`), or the policy object itself."""
    return spec if isinstance(spec, Policy) else parse_policy(spec)
