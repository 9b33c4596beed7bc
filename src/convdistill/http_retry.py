"""Retrying HTTP requests to a model endpoint: which answers another try may cure, and how long
to wait before it.

Two clients retry: the teacher client (`teacher.client`: async chat completions, every attempt
counted against a budget, an unusable answer retried with a new seed) and the served logit
teacher (`trainers.served_teacher`: sync /completions and /tokenize while a trainer waits).
Their loops differ in what happens around an attempt (async or not, budget, answer checks, and
which refusals end the run), so each keeps its own loop; the policy they share is here.
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass
from typing import Any


def transient(status: int) -> bool:
    """An HTTP status that another try may cure: 429 (rate limited) or any 5xx."""
    return status == 429 or status >= 500


def retry_after_seconds(headers: Any) -> float | None:
    """Retry-After as seconds: `retry-after-ms`, or `retry-after` in seconds or as an HTTP date."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time()) if when else None


@dataclass(frozen=True)
class RetryPolicy:
    """`max_retries` tries after the first, waiting base_s * 2^attempt between them, at most
    max_s."""

    max_retries: int
    base_s: float
    max_s: float

    @property
    def tries(self) -> int:
        return self.max_retries + 1

    def attempts(self, first: int = 0) -> range:
        """The attempt numbers left from `first` on (0 is the first try)."""
        return range(first, self.max_retries + 1)

    def retries_left(self, attempt: int) -> bool:
        return attempt < self.max_retries

    def delay(self, attempt: int, told: float | None = None, jitter: random.Random | None = None) -> float:
        """Seconds to wait after attempt `attempt` failed: what the server `told` (Retry-After)
        when it did, else the exponential backoff, drawn from its upper half with `jitter` (so
        that many clients refused at once do not return at once); never more than max_s."""
        if told is None:
            told = min(self.max_s, self.base_s * 2**attempt)
            if jitter is not None:
                told *= 0.5 + jitter.random() / 2
        return min(told, self.max_s)
