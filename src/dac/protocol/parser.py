"""Streaming directive parser: generated text in, mode events out, one step at a time.

The parser is fed only *generated* text (never the prompt), a delta per decode step. A
directive takes effect the moment its closing ``]]`` arrives; several directives completed in
one step are all reported and the last one wins.

Fallbacks (documented behaviour, never an exception):

* malformed directive (unknown mode, empty or bad region, garbage) -> return to ``global``;
* focus naming sections that do not exist -> the unknown ones are dropped (event
  ``unknown_section``); if none remain -> return to ``global``;
* an opener ``[[`` with no ``]]`` within :data:`MAX_DIRECTIVE_CHARS` characters, a new ``[[``
  before the close, or the end of generation -> ``unclosed`` event, return to ``global``.
"""

from __future__ import annotations

from collections.abc import Sequence

from .grammar import (
    CLOSE,
    MAX_DIRECTIVE_CHARS,
    OPEN,
    Directive,
    DirectiveError,
    Mode,
    ProtocolEvent,
    parse_directive,
)

GLOBAL = Directive(Mode.GLOBAL)


class StreamingParser:
    """Incremental parser over generated text for one sequence.

    ``num_sections`` bounds valid focus regions (sections are 1-based); ``None`` accepts any.
    """

    def __init__(self, num_sections: int | None = None, initial: Directive = GLOBAL):
        self.num_sections = num_sections
        self.current: Directive = initial
        self.events: list[ProtocolEvent] = []
        self._inside = False
        self._buf = ""  # directive body (inside) or a trailing "[" that may open one (outside)
        self._finished = False

    # -- feeding ---------------------------------------------------------------------------
    def feed(self, text: str, step: int) -> list[ProtocolEvent]:
        """Consume a text delta generated at ``step``; return the events it completed."""
        if self._finished or not text:
            return []
        out: list[ProtocolEvent] = []
        if self._inside and not self._buf:
            text = text.lstrip("[")  # "[[" then "[global]]": extra "[" still belong to the opener
        data = self._buf + text
        self._buf = ""
        i = 0
        n = len(data)
        while i < n:
            if not self._inside:
                j = data.find(OPEN, i)
                if j < 0:
                    # keep a lone trailing "[" in case the next delta starts with "["
                    if data.endswith("["):
                        self._buf = "["
                    break
                i = j + len(OPEN)
                while i < n and data[i] == "[":  # "[[[global]]" opens at the last "[["
                    i += 1
                self._inside = True
                continue
            # inside a directive: the body runs to the close, or to a fresh opener that
            # abandons it. Its length is judged the same however the text was split: a
            # trailing "]" or "[" may still start the close or an opener, so it is not counted.
            k = data.find(CLOSE, i)
            r = data.find(OPEN, i)
            end = min(x for x in (k, r, n) if x >= 0)
            known = end - 1 if end == n and data.endswith(("[", "]")) else end
            if known - i > MAX_DIRECTIVE_CHARS:
                out.append(self._error(step, "unclosed", data[i:i + MAX_DIRECTIVE_CHARS + 1],
                                       "directive too long"))
                self._inside = False
                continue  # rescan the abandoned body as ordinary text
            if end == n:
                self._buf = data[i:]
                break
            if end == r:
                out.append(self._error(step, "unclosed", data[i:r], "directive not closed"))
                self._inside = False
                i = r
                continue
            body = data[i:k]
            i = k + len(CLOSE)
            self._inside = False
            out.append(self._complete(step, body))
        self.events.extend(out)
        return out

    def finish(self, step: int) -> list[ProtocolEvent]:
        """End of generation: an open directive is reported as unclosed."""
        out: list[ProtocolEvent] = []
        if self._inside:
            out.append(self._error(step, "unclosed", self._buf, "generation ended inside a directive"))
            self.events.extend(out)
        self._inside = False
        self._buf = ""
        self._finished = True
        return out

    # -- helpers ---------------------------------------------------------------------------
    def _complete(self, step: int, body: str) -> ProtocolEvent:
        text = OPEN + body + CLOSE
        try:
            d = parse_directive(body, bounded=self.num_sections is not None)
        except DirectiveError as e:
            return self._error(step, e.kind, text, str(e))
        if d.mode is Mode.FOCUS and self.num_sections is not None:
            valid, dropped = _clip_regions(d.regions, self.num_sections)
            if dropped:
                if not valid:
                    ev = self._error(step, "unknown_section", text,
                                     f"no section among {list(dropped)[:8]} exists "
                                     f"(context has {self.num_sections})", dropped=dropped)
                    return ev
                applied = Directive(Mode.FOCUS, valid)
                self.current = applied
                return ProtocolEvent(step, "unknown_section", text, d, applied,
                                     f"dropped unknown sections {list(dropped)[:8]}",
                                     tuple(dropped))
        self.current = d
        return ProtocolEvent(step, "directive", text, d, d)

    def _error(self, step: int, kind: str, text: str, message: str,
               dropped: Sequence[int] = ()) -> ProtocolEvent:
        self.current = GLOBAL
        return ProtocolEvent(step, kind, text, None, GLOBAL, message, tuple(dropped))


def _clip_regions(regions: Sequence[tuple[int, int]], num_sections: int
                  ) -> tuple[tuple[tuple[int, int], ...], list[int]]:
    valid: list[tuple[int, int]] = []
    dropped: list[int] = []
    for lo, hi in regions:
        if lo > num_sections:
            dropped.append(lo)
            continue
        if hi > num_sections:
            dropped.append(hi)
            hi = num_sections
        valid.append((lo, hi))
    return tuple(valid), dropped


def strip_directives(text: str) -> str:
    """The answer text without any ``[[...]]`` directive (closed or not)."""
    out = []
    i = 0
    while True:
        j = text.find(OPEN, i)
        if j < 0:
            out.append(text[i:])
            break
        out.append(text[i:j])
        k = text.find(CLOSE, j + 2)
        if k < 0:
            break
        i = k + 2
    return "".join(out).strip()
