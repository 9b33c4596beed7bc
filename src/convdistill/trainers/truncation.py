"""One truncation policy for every trainer, and the counts that make it visible.

When a conversation does not fit: drop the oldest turns first, whole exchanges at a time
(a kept conversation still starts with a user turn), keep the system message, and never drop
the reply being trained. Only if the latest exchange alone is still too long are tokens cut:
the oldest context tokens first, and the reply's tail last of all (keeping its start).
Nothing happens silently: every cut and drop is counted in `TruncationStats`, which each run
logs and saves beside the checkpoint.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Message = dict[str, str]


@dataclass
class TruncationStats:
    records: int = 0  # paths or pairs read
    examples: int = 0  # training examples built (SFT enc-dec: one per trained turn)
    truncated: int = 0  # examples shortened in any way
    turns_dropped: int = 0  # messages dropped from the start of conversations
    context_cut: int = 0  # examples whose remaining context was cut at token level
    reply_cut: int = 0  # examples whose trained reply lost its tail
    dropped: int = 0  # examples (or records) removed entirely
    drop_reasons: Counter = field(default_factory=Counter)
    assistant_tokens: int = 0  # every assistant token (reply + end-of-turn) in the records
    selected_tokens: int = 0  # of those, in the turns chosen for training (train_on)
    trained_tokens: int = 0  # loss-carrying tokens actually in the training data

    def drop(self, reason: str) -> None:
        self.dropped += 1
        self.drop_reasons[reason] += 1

    @property
    def trained_fraction(self) -> float:
        """Trained tokens over the tokens of the turns chosen for training: 1.0 means
        truncation lost nothing."""
        return self.trained_tokens / self.selected_tokens if self.selected_tokens else 0.0

    @property
    def assistant_fraction(self) -> float:
        """Trained tokens over all assistant tokens (lower when train_on leaves turns out)."""
        return self.trained_tokens / self.assistant_tokens if self.assistant_tokens else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "examples": self.examples,
            "truncated": self.truncated,
            "turns_dropped": self.turns_dropped,
            "context_cut": self.context_cut,
            "reply_cut": self.reply_cut,
            "dropped": self.dropped,
            "drop_reasons": dict(self.drop_reasons),
            "assistant_tokens": self.assistant_tokens,
            "selected_tokens": self.selected_tokens,
            "trained_tokens": self.trained_tokens,
            "trained_fraction": round(self.trained_fraction, 4),
            "assistant_fraction": round(self.assistant_fraction, 4),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TruncationStats:
        """The counts `as_dict` wrote (its derived fractions are recomputed, not read)."""
        counts = {k: v for k, v in data.items() if k not in ("trained_fraction", "assistant_fraction", "drop_reasons")}
        return cls(**counts, drop_reasons=Counter(data.get("drop_reasons", {})))

    def summary(self) -> str:
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(self.drop_reasons.items()))
        return (
            f"{self.records} records -> {self.examples} examples; truncated {self.truncated} "
            f"({self.turns_dropped} turns dropped, {self.context_cut} context cut, "
            f"{self.reply_cut} replies cut); dropped {self.dropped}"
            + (f" ({reasons})" if reasons else "")
            + (
                f"; trained tokens {self.trained_tokens}/{self.selected_tokens} selected "
                f"({self.trained_fraction:.1%}), {self.assistant_fraction:.1%} of all assistant tokens"
                if self.selected_tokens
                # on-policy distillation keeps prompts only: the student writes the replies it is trained on
                else "; prompts only, no reference reply tokens"
            )
        )


def exchange_starts(messages: Sequence[Message]) -> list[int]:
    """Where a shortened conversation may start: at each user message after the system one."""
    first = 1 if messages and messages[0]["role"] == "system" else 0
    return [i for i in range(first, len(messages)) if messages[i]["role"] == "user"]


def keep_latest_turns(
    messages: Sequence[Message],
    fits: Callable[[list[Message]], bool],
    keep_from: int | None = None,
) -> tuple[list[Message], int, bool]:
    """The longest suffix of whole exchanges (plus the system message) that `fits`.

    `keep_from`: a message index that must stay (the reply being trained); starts after it are
    never tried. Returns (kept messages, messages dropped, whether it fits). When nothing
    fits, the shortest candidate is returned with fits=False, for token-level cutting.
    Binary search: the length only shrinks as the start moves later.
    """
    messages = list(messages)
    if fits(messages):
        return messages, 0, True
    system = messages[:1] if messages and messages[0]["role"] == "system" else []
    limit = len(messages) - 1 if keep_from is None else keep_from
    starts = [i for i in exchange_starts(messages) if 0 < i <= limit and i > len(system)]
    if not starts:
        return messages, 0, False
    low, high, best = 0, len(starts) - 1, None
    while low <= high:
        mid = (low + high) // 2
        if fits(system + messages[starts[mid]:]):
            best, high = mid, mid - 1
        else:
            low = mid + 1
    start = starts[best] if best is not None else starts[-1]
    kept = system + messages[start:]
    return kept, start - len(system), best is not None


def cut_tokens(
    context: list[int], reply: list[int], budget: int, min_context: int
) -> tuple[list[int], list[int], bool, bool]:
    """Token-level last resort: keep the newest context tokens and the reply's start so that
    the total fits `budget`. The reply keeps all but what `min_context` context tokens need.
    Returns (context, reply, context was cut, reply was cut)."""
    keep_context = min(len(context), min_context)
    reply_room = budget - keep_context
    reply_cut = len(reply) > reply_room
    if reply_cut:
        reply = reply[:reply_room]
    context_room = budget - len(reply)
    context_cut = len(context) > context_room
    if context_cut:
        context = context[len(context) - context_room:] if context_room > 0 else []
    return context, reply, context_cut, reply_cut
