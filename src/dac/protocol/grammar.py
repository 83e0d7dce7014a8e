"""Directive grammar: the declarations a model writes to steer its own attention.

A directive is written inside double square brackets::

    [[global]]                 attend to the whole context
    [[local]]                  attend to recent text only (default window)
    [[local 512]]              ... with an explicit window in tokens
    [[focus S3]]               attend to section 3 (plus sinks, question, recent text)
    [[focus S2-S4, S7]]        several sections and ranges ("S" is optional: [[focus 2-4,7]])

Modes are case-insensitive; whitespace inside the brackets is free. Numbers are ASCII digits
only, everywhere (``[[focus ２]]``, with a full-width digit, is garbage like ``[[local ２]]``).
Anything else between ``[[`` and ``]]`` is a malformed directive: it is reported, never raised
(see :class:`~dac.protocol.parser.StreamingParser` for the fallback).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

OPEN = "[["
CLOSE = "]]"
#: A directive body longer than this is treated as unclosed garbage.
MAX_DIRECTIVE_CHARS = 96


class Mode(str, enum.Enum):
    GLOBAL = "global"
    LOCAL = "local"
    FOCUS = "focus"


@dataclass(frozen=True)
class Directive:
    """A well-formed declaration. ``regions`` are inclusive 1-based section ranges."""

    mode: Mode
    regions: tuple[tuple[int, int], ...] = ()
    window: int | None = None  # local mode only: explicit recent-window size in tokens

    def sections(self) -> list[int]:
        out: set[int] = set()
        for lo, hi in self.regions:
            out.update(range(lo, hi + 1))
        return sorted(out)

    def render(self) -> str:
        """The canonical text of this directive (``parse_directive(d.render()) == d``)."""
        if self.mode is Mode.FOCUS:
            parts = [f"S{lo}" if lo == hi else f"S{lo}-S{hi}" for lo, hi in self.regions]
            return f"[[focus {', '.join(parts)}]]"
        if self.mode is Mode.LOCAL and self.window is not None:
            return f"[[local {self.window}]]"
        return f"[[{self.mode.value}]]"


class DirectiveError(ValueError):
    """Raised by :func:`parse_directive` only; the streaming parser turns it into an event."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


_REGION = re.compile(r"^\s*[sS]?\s*([0-9]+)\s*(?:-\s*[sS]?\s*([0-9]+)\s*)?$")
_HEAD = re.compile(r"^\s*([A-Za-z]+)\s*:?\s*(.*?)\s*$", re.DOTALL)
#: Sections one region may span when no section count bounds it; wider is garbage rather
#: than planned. (A parser that knows the count clips regions to it instead.)
MAX_SECTION_SPAN = 100_000


def parse_directive(body: str, *, bounded: bool = False) -> Directive:
    """Parse the text between ``[[`` and ``]]``. Raises :class:`DirectiveError` if malformed.

    ``bounded``: the caller clips regions to the prompt's sections itself, so a region of any
    width is well-formed (``[[focus S2-S99999999999]]`` then means "S2 onwards")."""
    m = _HEAD.match(body)
    if not m:
        raise DirectiveError("garbage", f"not a directive: {body!r}")
    word, rest = m.group(1).lower(), m.group(2)
    try:
        mode = Mode(word)
    except ValueError:
        raise DirectiveError("unknown_mode", f"unknown mode {word!r}") from None
    if mode is Mode.GLOBAL:
        if rest:
            raise DirectiveError("garbage", f"global takes no arguments: {rest!r}")
        return Directive(Mode.GLOBAL)
    if mode is Mode.LOCAL:
        if not rest:
            return Directive(Mode.LOCAL)
        if not (rest.isascii() and rest.isdigit()) or int(rest) <= 0:  # not "²"
            raise DirectiveError("garbage", f"local window must be a positive integer: {rest!r}")
        return Directive(Mode.LOCAL, window=int(rest))
    if not rest:
        raise DirectiveError("empty_region", "focus names no section")
    regions: list[tuple[int, int]] = []
    for part in rest.split(","):
        r = _REGION.match(part)
        if not r:
            raise DirectiveError("garbage", f"bad region {part.strip()!r}")
        lo = int(r.group(1))
        hi = int(r.group(2)) if r.group(2) is not None else lo
        if lo < 1 or hi < lo:
            raise DirectiveError("empty_region", f"empty region S{lo}-S{hi}")
        if hi - lo > MAX_SECTION_SPAN and not bounded:
            raise DirectiveError("garbage", f"region S{lo}-S{hi} is implausibly large")
        regions.append((lo, hi))
    return Directive(Mode.FOCUS, tuple(regions))


@dataclass(frozen=True)
class ProtocolEvent:
    """Something the parser saw in generated text, at generation step ``step``.

    ``kind`` is ``"directive"`` for a well-formed declaration (``directive`` set) or an error
    kind: ``unknown_mode``, ``empty_region``, ``garbage``, ``unknown_section``, ``unclosed``.
    ``applied`` is the directive actually in force after this event (the fallback for errors).
    """

    step: int
    kind: str
    text: str
    directive: Directive | None = None
    applied: Directive | None = None
    message: str = ""
    dropped_sections: tuple[int, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.kind == "directive"
