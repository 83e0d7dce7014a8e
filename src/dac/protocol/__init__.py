"""The DAC protocol: system prompt, addressable context, directive grammar, streaming parser."""

from .context import PromptLayout, Span, build_prompt, render_context, split_sections
from .detok import IncrementalDetokenizer
from .grammar import Directive, DirectiveError, Mode, ProtocolEvent, parse_directive
from .parser import GLOBAL, StreamingParser, strip_directives
from .prompt import PROTOCOL_VERSION, SYSTEM_PROMPT, section_marker

__all__ = [
    "GLOBAL", "PROTOCOL_VERSION", "SYSTEM_PROMPT", "Directive", "DirectiveError",
    "IncrementalDetokenizer", "Mode", "PromptLayout", "ProtocolEvent", "Span",
    "StreamingParser", "build_prompt", "parse_directive", "render_context", "section_marker",
    "split_sections", "strip_directives",
]
