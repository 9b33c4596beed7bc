"""Turning a row's generated token ids into text deltas, with stop strings honoured.

Text is re-decoded from all ids each step (byte-level BPE: one character can span several
tokens) and released only when safe: never half a character, and never the start of what
may become a stop string, which the client must not see.
"""

from __future__ import annotations

from typing import Any


class TextStream:
    def __init__(self, tokenizer: Any, stop: tuple[str, ...]):
        self.tokenizer = tokenizer
        self.stop = tuple(s for s in stop if s)
        self.ids: list[int] = []
        self.text = ""
        self.sent = 0  # characters of self.text already released
        self.stopped = False  # a stop string was found; self.text is cut before it

    def add(self, token_id: int) -> None:
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if self.stop:
            # A stop string can only end in the new part; look from where it could begin.
            start = max(0, len(self.text) - max(map(len, self.stop)))
            hits = [i for s in self.stop if (i := text.find(s, start)) >= 0]
            if hits:
                text = text[: min(hits)]
                self.stopped = True
        self.text = text

    def delta(self, final: bool) -> str:
        """New text that is safe to release now (all of it when `final`)."""
        end = len(self.text)
        if not final and not self.stopped:
            while end > self.sent and self.text[end - 1] == "\ufffd":
                end -= 1  # an incomplete UTF-8 sequence: wait for its other bytes
            end -= self._held_back(self.text[:end])
        if end <= self.sent:
            return ""
        out = self.text[self.sent : end]
        self.sent = end
        return out

    def _held_back(self, text: str) -> int:
        """Length of the longest suffix of `text` that begins some stop string."""
        held = 0
        for stop in self.stop:
            for size in range(min(len(stop) - 1, len(text)), held, -1):
                if text.endswith(stop[:size]):
                    held = size
                    break
        return held
