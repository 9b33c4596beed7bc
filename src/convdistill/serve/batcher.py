"""Request batching: one worker thread owns the model and runs waiting jobs together.

Requests arriving while a batch runs queue up and form the next batch, so under load batches
fill by themselves; a lone request waits at most `batch_wait_s` for company. A batch is also
capped in padded tokens, so that one long prompt cannot make a batch of short ones (padded to
its length) blow up memory.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from convdistill.serve.chat_model import ChatModel
from convdistill.serve.events import Job

log = logging.getLogger("convdistill.serve")


class Overloaded(RuntimeError):
    """More jobs are waiting than the server accepts; the client should retry later."""


class Batcher:
    def __init__(
        self,
        model: ChatModel,
        max_batch_size: int = 16,
        batch_wait_s: float = 0.01,
        max_batch_tokens: int = 16384,
        max_pending: int = 512,
    ):
        self.model = model
        self.max_batch_size = max(1, max_batch_size)
        self.batch_wait_s = batch_wait_s
        self.max_batch_tokens = max_batch_tokens
        self.max_pending = max_pending
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._running = 0
        self._closing = False
        self._thread = threading.Thread(target=self._work, name="convdistill-generate", daemon=True)
        self.batches = 0  # statistics, for /health and benchmarks
        self.rows = 0

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 30.0) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def pending(self) -> int:
        return len(self._queue) + self._running

    def submit(self, jobs: list[Job]) -> None:
        """Queue all of a request's jobs, or none (raises Overloaded)."""
        with self._cond:
            if self._closing:
                raise Overloaded("the server is shutting down")
            if self.pending + len(jobs) > self.max_pending:
                raise Overloaded(f"{self.pending} generations are waiting; try again shortly")
            self._queue.extend(jobs)
            self._cond.notify_all()

    def cancel(self, jobs: list[Job]) -> None:
        """The client has gone: queued jobs leave the queue (they never start), running ones
        leave their batch at the next decoding step (the worker checks the flag every token)."""
        with self._cond:
            for job in jobs:
                job.cancelled = True
            # Rebuilding the deque is O(queue) but keeps `pending` honest at once: a server
            # whose clients all hung up reads as idle, not as busy with work nobody will read.
            if any(job in self._queue for job in jobs):
                self._queue = deque(job for job in self._queue if not job.cancelled)
            self._cond.notify_all()

    def _take(self) -> list[Job]:
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait()
            if not self._queue:
                return []
            deadline = time.monotonic() + self.batch_wait_s
            while len(self._queue) < self.max_batch_size and not self._closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch: list[Job] = []
            width = 0
            while self._queue and len(batch) < self.max_batch_size:
                job = self._queue[0]
                if job.cancelled:
                    self._queue.popleft()
                    continue
                wider = max(width, len(job.prompt_ids) + job.params.max_tokens)
                if batch and wider * (len(batch) + 1) > self.max_batch_tokens:
                    break
                batch.append(self._queue.popleft())
                width = wider
            self._running = len(batch)
            return batch

    def _work(self) -> None:
        while True:
            batch = self._take()
            if not batch:
                if self._closing:
                    return
                continue
            try:
                self.model.generate(batch)
            except Exception as exc:  # a failed batch must not take the server down
                log.exception("generation failed for a batch of %d", len(batch))
                self.model.fail(batch, f"generation failed: {type(exc).__name__}")
            finally:
                with self._cond:
                    self._running = 0
                    self.batches += 1
                    self.rows += len(batch)
