"""A heartbeat for long calls that report little themselves (a teacher waiting on a CPU model):
a status line every few seconds, so a newcomer watching the demo sees it is alive."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType

from convdistill.demo.stages import Log


class Heartbeat:
    def __init__(self, log: Log, status: Callable[[], str], every_s: float = 15.0):
        self.log = log
        self.status = status
        self.every_s = every_s
        self.started = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="convdistill-demo-heartbeat", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.every_s):
            self.log(f"    ... {self.status()} ({time.perf_counter() - self.started:.0f} s)")

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
