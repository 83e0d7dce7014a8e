"""The DAC protocol: system prompt, addressable context, directive grammar, streaming parser."""

from .constraint import banned_token_ids, section_bans, section_tokens
from .context import PromptLayout, Span, build_prompt, render_context, split_sections
from .detok import IncrementalDetokenizer
from .grammar import Directive, DirectiveError, Mode, ProtocolEvent, parse_directive
from .parser import GLOBAL, StreamingParser, strip_directives
from .prompt import PROTOCOL_VERSION, SYSTEM_PROMPT, section_marker

__all__ = [
    "GLOBAL", "PROTOCOL_VERSION", "SYSTEM_PROMPT", "Directive", "DirectiveError",
    "IncrementalDetokenizer", "Mode", "PromptLayout", "ProtocolEvent", "Span",
    "StreamingParser", "banned_token_ids", "build_prompt", "parse_directive", "render_context",
    "section_bans", "section_marker", "section_tokens", "split_sections", "strip_directives",
]
