"""The progress log of long runs (the demo, the experiments): one line at a time on stderr, as
it happens, so that stdout stays free for what a command prints as its result."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

Log = Callable[[str], None]


def stderr_log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def timed(log: Log) -> Log:
    """`log` with the time of day before each line ([HH:MM:SS]): for runs that take hours."""

    def timed_log(line: str) -> None:
        log(f"[{time.strftime('%H:%M:%S')}] {line}")

    return timed_log
