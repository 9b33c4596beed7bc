"""A request cache in SQLite: an answered request is never paid for twice.

The key is a hash of everything that determines an answer: the endpoint's model name, the
messages, the sampling parameters and the seed (not the base URL, so moving a server to another
port keeps its answers; not the API key, which is never stored anywhere). Each answer is
committed as soon as it arrives, in WAL mode, so a run killed at any point keeps every answer it
received, and the rerun sends none of those requests again. The cache doubles as the run's
journal: resuming is rerunning.

Batch files (OpenAI Batch, vLLM run-batch) go through two more tables: `batch_requests`, the
requests a `--batch-out` file holds (by custom_id: the request key of the payload as sent), and
`batch_answers`, the raw answers a `--batch-in` file brought for them. A batch answer is checked
like a live one when a run asks for it, and only then becomes a cached answer.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson


def request_key(payload: dict[str, Any]) -> str:
    """A stable hash of a request payload (sorted keys, so field order does not matter)."""
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True)
class CachedAnswer:
    text: str
    prompt_tokens: int
    completion_tokens: int
    created_date: str  # when the answer first arrived; reused so resumed runs match


class RequestCache:
    """Thread-safe; one connection, short transactions."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a killed process (only a power cut can lose the last
        # commits), at a fraction of FULL's cost per answer.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, model TEXT, text TEXT,"
            " prompt_tokens INTEGER, completion_tokens INTEGER, created_date TEXT)"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS batch_requests (key TEXT PRIMARY KEY, payload BLOB)")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS batch_answers (key TEXT PRIMARY KEY, text TEXT,"
            " prompt_tokens INTEGER, completion_tokens INTEGER, created_date TEXT)"
        )

    def get(self, key: str) -> CachedAnswer | None:
        with self._lock:
            row = self._db.execute(
                "SELECT text, prompt_tokens, completion_tokens, created_date FROM answers WHERE key = ?",
                (key,),
            ).fetchone()
        return CachedAnswer(*row) if row else None

    def put(self, key: str, model: str, answer: CachedAnswer) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?)",
                (
                    key,
                    model,
                    answer.text,
                    answer.prompt_tokens,
                    answer.completion_tokens,
                    answer.created_date,
                ),
            )

    def add_batch_requests(self, payloads: dict[str, dict[str, Any]]) -> None:
        """Remember the requests a batch file holds, by custom_id, so that an output file's lines
        can be told apart from foreign ones."""
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO batch_requests VALUES (?, ?)",
                [(key, orjson.dumps(payload)) for key, payload in payloads.items()],
            )

    def is_batch_request(self, key: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT 1 FROM batch_requests WHERE key = ?", (key,)).fetchone()
        return row is not None

    def put_batch_answers(self, answers: dict[str, CachedAnswer]) -> None:
        """All of a batch file's usable answers in one transaction: a file read halfway (a
        crash, a bad disk) leaves the cache as it was."""
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO batch_answers VALUES (?, ?, ?, ?, ?)",
                [(key, a.text, a.prompt_tokens, a.completion_tokens, a.created_date)
                 for key, a in answers.items()],
            )

    def get_batch_answer(self, key: str) -> CachedAnswer | None:
        with self._lock:
            row = self._db.execute(
                "SELECT text, prompt_tokens, completion_tokens, created_date FROM batch_answers WHERE key = ?",
                (key,),
            ).fetchone()
        return CachedAnswer(*row) if row else None

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
