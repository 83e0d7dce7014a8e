"""The system prompt that teaches a model the protocol, and the protocol's version."""

from __future__ import annotations

PROTOCOL_VERSION = "dac-protocol/1"

SECTION_MARKER = "[S{index}]"

SYSTEM_PROMPT = """\
You can control your own attention span. The document below is split into numbered sections, \
each starting with a marker such as [S1], [S2], [S3].
Before you answer, declare where you will attend, with exactly one of:
  [[focus S3]] or [[focus S2-S4, S7]]  read only the listed sections (and the question)
  [[global]]                           read the whole document (counting, aggregation, or unsure)
  [[local]]                            read only the most recent text
A declaration takes effect at once; you may write a new one at any time, for example \
[[global]] if the focused sections turn out not to hold the answer.
Then give the answer, short and exact."""


def section_marker(index: int) -> str:
    return SECTION_MARKER.format(index=index)
