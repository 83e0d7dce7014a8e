"""The DAC protocols: prompts with addressable context, directive grammars, streaming parsers.

``brackets`` is the project's ``[[...]]`` dialect; ``da`` is Declarative Attention (tags over
magic chunks); ``vanilla`` is the baseline without directives. :func:`get_protocol` names them.
"""

from .base import (
    PROTOCOLS,
    BracketsProtocol,
    DirectiveParser,
    Protocol,
    extract_answer,
    get_protocol,
    register_protocol,
)
from .chunks import EMPTY_CHUNK, segment, segment_spans
from .constraint import banned_token_ids, section_bans, section_tokens
from .context import PromptLayout, Span, build_prompt, render_context, split_sections
from .da import DA_INSTRUCTION, DA_SYSTEM, MAGIC_CHUNK_TOOL, SINK_TOKENS, DAParser, DAProtocol
from .detok import IncrementalDetokenizer
from .grammar import Directive, DirectiveError, Mode, ProtocolEvent, parse_directive
from .parser import GLOBAL, StreamingParser, strip_directives
from .prompt import PROTOCOL_VERSION, SYSTEM_PROMPT, section_marker
from .vanilla import VANILLA_INSTRUCTION, VanillaParser, VanillaProtocol

__all__ = [
    "DA_INSTRUCTION", "DA_SYSTEM", "EMPTY_CHUNK", "GLOBAL", "MAGIC_CHUNK_TOOL", "PROTOCOLS",
    "PROTOCOL_VERSION", "SINK_TOKENS", "SYSTEM_PROMPT", "VANILLA_INSTRUCTION",
    "BracketsProtocol", "DAParser", "DAProtocol", "Directive", "DirectiveError",
    "DirectiveParser", "IncrementalDetokenizer", "Mode", "PromptLayout", "Protocol",
    "ProtocolEvent", "Span", "StreamingParser", "VanillaParser", "VanillaProtocol",
    "banned_token_ids", "build_prompt", "extract_answer", "get_protocol", "parse_directive",
    "register_protocol", "render_context", "section_bans", "section_marker", "section_tokens",
    "segment", "segment_spans", "split_sections", "strip_directives",
]
