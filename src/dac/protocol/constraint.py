"""Section-bounded decoding: directive tokens naming a section the prompt lacks are impossible.

The runtime knows a prompt's layout, so it knows before the first decode step that
``[[focus S9]]`` in a context of 8 sections can only end in the parser's ``unknown_section``
fallback (the section dropped; ``global``, reading everything, when none remains). Tokenizers
built like the project's (:func:`dac.train.tokenizer.protocol_tokens`) spell each directive
piece as one added token: ``[[focus Sk]]``, the multi-region opener ``[[focus Sk``, ``, Sk``
and ``-Sk``. The engines give the pieces that name a section outside ``1..num_sections``
-inf logits at every step, as guided decoding does, so the model writes its best in-range
choice instead. Which tokens those are is decided here, once per tokenizer.

Tokenizers that spell directives with ordinary text tokens (a stock Qwen or Llama tokenizer:
``[[focus S9]]`` is ``[[``, ``focus``, `` S``, ``9``, ``]]``) have no such added tokens: their
banned set is empty, nothing is constrained, and the parser's fallback stays the only guard.
It also stays the guard for a section an added-token model spells out of ordinary tokens.
Section markers (``[Sk]``) are prompt text, not directive pieces, and are never banned.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Sequence
from typing import Any

from .context import PromptLayout

#: a directive piece naming sections: "[[focus S3]]", "[[focus S3", ", S3", "-S3" (also a
#: range such as "[[focus S2-S4]]" or ", S2-S4", should a tokenizer add one)
_PIECE = re.compile(r"^\s*(?:\[\[\s*focus\s+|,\s*|-\s*)s\s*(\d+)(?:\s*-\s*s?\s*(\d+))?"
                    r"\s*(?:\]\])?\s*$", re.IGNORECASE)


def piece_sections(text: str) -> tuple[int, int] | None:
    """The lowest and highest section a directive-piece token's text names, else ``None``."""
    m = _PIECE.match(text)
    if not m:
        return None
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) is not None else lo
    return min(lo, hi), max(lo, hi)


class SectionTokens:
    """The directive-piece tokens of one tokenizer and the sections each names."""

    def __init__(self, pieces: dict[int, tuple[int, int]]):
        self.pieces = dict(pieces)  # token id -> (lowest, highest) section named
        self._banned: dict[int, frozenset[int]] = {}

    def banned(self, num_sections: int) -> frozenset[int]:
        """Ids naming a section outside ``1..num_sections``: the tokens no valid focus uses."""
        out = self._banned.get(num_sections)
        if out is None:
            out = frozenset(t for t, (lo, hi) in self.pieces.items()
                            if lo < 1 or hi > num_sections)
            self._banned[num_sections] = out
        return out


def _added_vocab(tokenizer: Any) -> dict[str, int]:
    get = getattr(tokenizer, "get_added_vocab", None)
    return dict(get()) if callable(get) else {}


_CACHE: weakref.WeakKeyDictionary[Any, tuple[int, SectionTokens]] = weakref.WeakKeyDictionary()


def section_tokens(tokenizer: Any) -> SectionTokens:
    """The added tokens of ``tokenizer`` that name sections (cached per tokenizer object, and
    rebuilt if tokens were added since; empty for tokenizers without such tokens)."""
    size = len(tokenizer)
    try:
        hit = _CACHE.get(tokenizer)
    except TypeError:  # not weak-referenceable or hashable: compute every time
        hit = None
    if hit is not None and hit[0] == size:
        return hit[1]
    pieces = {int(i): s for text, i in _added_vocab(tokenizer).items()
              if (s := piece_sections(text)) is not None}
    st = SectionTokens(pieces)
    try:
        _CACHE[tokenizer] = (size, st)
    except TypeError:
        pass
    return st


def banned_token_ids(tokenizer: Any, num_sections: int) -> frozenset[int]:
    """Ids of ``tokenizer``'s directive-piece tokens that name a section a prompt of
    ``num_sections`` sections lacks (empty when the tokenizer has no such tokens)."""
    return section_tokens(tokenizer).banned(num_sections)


def section_bans(tokenizer: Any, layouts: Sequence[PromptLayout], *, enabled: bool = True
                 ) -> list[frozenset[int]] | None:
    """Banned ids per prompt, or ``None`` when nothing is banned in any of them (the bound is
    off, or the tokenizer has no directive-piece tokens): engines then skip the work. Only
    the brackets dialect has section tokens to ban; a ``da`` prompt's tags are ordinary text,
    so its out-of-range chunks are left to the parser's fallback."""
    if not enabled:
        return None
    bans = [banned_token_ids(tokenizer, lay.num_sections)
            if getattr(lay, "protocol", "brackets") == "brackets" else frozenset()
            for lay in layouts]
    return bans if any(bans) else None


def ban_mask(bans: Sequence[frozenset[int]], vocab: int, device: Any) -> Any:
    """``[rows, vocab]`` bool tensor, True where a row's token is banned (ids past ``vocab``
    ignored): the form a decoding loop applies with one ``masked_fill`` per step."""
    import torch

    mask = torch.zeros(len(bans), vocab, dtype=torch.bool)
    for b, ids in enumerate(bans):
        idx = [t for t in ids if 0 <= t < vocab]
        if idx:
            mask[b, idx] = True
    return mask.to(device)
