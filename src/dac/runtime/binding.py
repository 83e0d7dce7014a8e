"""How per-generation state reaches an attention function: one attribute on each module.

transformers calls a registered attention function with the attention module, not with the
engine that registered it. ``with bind(modules, state):`` sets ``module._dac_state`` on each
attention module for the duration of a generation (or a training forward), and the attention
function reads it back with :func:`bound`. Every engine (``dac``, ``dac_fast``, ``dac_train``)
uses this one mechanism, so state never lives in a module-global and two models can run
different engines in one process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

ATTR = "_dac_state"


@contextlib.contextmanager
def bind(modules: Iterable[Any], state: Any) -> Iterator[Any]:
    """Attach ``state`` to ``modules`` (restoring what was there before on exit)."""
    mods = list(modules)
    prev = [getattr(m, ATTR, None) for m in mods]
    for m in mods:
        setattr(m, ATTR, state)
    try:
        yield state
    finally:
        for m, p in zip(mods, prev):
            if p is None:
                if hasattr(m, ATTR):
                    delattr(m, ATTR)
            else:
                setattr(m, ATTR, p)


def bound(module: Any) -> Any:
    """The state :func:`bind` attached to ``module``, or ``None``."""
    return getattr(module, ATTR, None)
