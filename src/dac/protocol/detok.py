"""Incremental detokenization: token ids in, stable text deltas out.

Decoding one token at a time is wrong for byte-fallback and sentencepiece tokenizers (leading
spaces, multi-byte characters). This is the prefix/read-offset scheme used by TGI and vLLM:
decode a short window of recent ids and emit only text that is complete.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Any, skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens,
                                     clean_up_tokenization_spaces=False)

    def push(self, new_ids: Iterable[int]) -> str:
        """Append generated ids; return the newly completed text (possibly empty)."""
        self.ids.extend(int(t) for t in new_ids)
        prefix_text = self._decode(self.ids[self._prefix:self._read])
        full_text = self._decode(self.ids[self._prefix:])
        if len(full_text) > len(prefix_text) and not full_text.endswith("\ufffd"):
            delta = full_text[len(prefix_text):]
            self._prefix = self._read
            self._read = len(self.ids)
            return delta
        return ""

    def flush(self) -> str:
        """Text still held back at the end of generation (e.g. an incomplete byte sequence)."""
        prefix_text = self._decode(self.ids[self._prefix:self._read])
        full_text = self._decode(self.ids[self._prefix:])
        self._prefix = self._read = len(self.ids)
        return full_text[len(prefix_text):] if full_text.startswith(prefix_text) else ""
