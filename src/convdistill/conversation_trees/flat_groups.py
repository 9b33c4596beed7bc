"""Group the rows of a flat input (flat JSONL, Hub parquet) by tree without holding the input.

A flat file may hold a tree's rows anywhere, so a tree can only be built once all its rows are
seen. Small inputs are held in memory, as before. Once the rows held pass ``spill_bytes``, every
row is written to one of K bucket files on disk, chosen by a hash of its tree id, with K sized
from the estimated input size so that each bucket holds about ``bucket_bytes``; buckets are then
grouped one at a time. Peak memory is therefore about ``spill_bytes`` (plus one bucket) whatever
the input size.

Trees then come out bucket by bucket (each bucket in the usual order: root creation date, then
row order), not in the file's order. Duplicate message ids are detected within a tree id, as
every row of a tree lands in one bucket. A spilled row must say which tree it belongs to:
``message_tree_id``, or no ``parent_id`` (a root is its own tree); Open-Assistant's flat exports
and the Hub's files always carry the id.
"""

from __future__ import annotations

import math
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

Row = tuple[int, dict[str, Any]]  # (record number, message)

SPILL_BYTES = 16 << 20
BUCKET_BYTES = 8 << 20
MAX_BUCKETS = 512


def tree_key(row: dict[str, Any]) -> str | None:
    tree = row.get("message_tree_id")
    if isinstance(tree, str):
        return tree
    if row.get("parent_id") is None and isinstance(row.get("message_id"), str):
        return row["message_id"]
    return None


class FlatRows:
    """Collects (record number, row) pairs; ``groups()`` yields lists of rows closed under tree.

    ``done_fraction`` says how much of the input has been read (0..1): it sizes the buckets.
    ``on_unkeyed`` receives a spilled row that names no tree (it cannot be bucketed).
    """

    def __init__(
        self,
        done_fraction: Callable[[], float],
        on_unkeyed: Callable[[int, dict[str, Any]], None],
        spill_bytes: int = SPILL_BYTES,
        bucket_bytes: int = BUCKET_BYTES,
    ):
        self.done_fraction = done_fraction
        self.on_unkeyed = on_unkeyed
        self.spill_bytes = spill_bytes
        self.bucket_bytes = bucket_bytes
        self.rows: list[Row] = []
        self.held = 0
        self.buckets: list[IO[bytes]] = []
        self._tmp: tempfile.TemporaryDirectory | None = None

    @property
    def spilled(self) -> bool:
        return bool(self.buckets)

    def add(self, number: int, row: dict[str, Any], size: int) -> None:
        if self.buckets:
            self._spill_one(number, row)
            return
        self.rows.append((number, row))
        self.held += size
        if self.held > self.spill_bytes:
            self._start_spilling()

    def _start_spilling(self) -> None:
        fraction = min(max(self.done_fraction(), 1e-6), 1.0)
        estimate = self.held / fraction
        count = min(MAX_BUCKETS, max(2, math.ceil(estimate / self.bucket_bytes)))
        self._tmp = tempfile.TemporaryDirectory(prefix="convdistill-flat-")
        folder = Path(self._tmp.name)
        self.buckets = [open(folder / f"{i:04d}.jsonl", "w+b") for i in range(count)]  # noqa: SIM115
        rows, self.rows, self.held = self.rows, [], 0
        for number, row in rows:
            self._spill_one(number, row)

    def _spill_one(self, number: int, row: dict[str, Any]) -> None:
        key = tree_key(row)
        if key is None:
            self.on_unkeyed(number, row)
            return
        bucket = self.buckets[zlib.crc32(key.encode()) % len(self.buckets)]
        bucket.write(orjson.dumps([number, row]) + b"\n")

    def groups(self) -> Iterator[list[Row]]:
        if not self.buckets:
            if self.rows:
                rows, self.rows = self.rows, []
                yield rows
            return
        for bucket in self.buckets:
            bucket.flush()
            bucket.seek(0)
            rows = [tuple(orjson.loads(line)) for line in bucket]
            bucket.close()
            if rows:
                yield rows  # type: ignore[misc]

    def close(self) -> None:
        for bucket in self.buckets:
            bucket.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
