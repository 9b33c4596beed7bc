"""Read Open-Assistant exports, either format, gzipped or not, into checked DiGraph trees.

Nested-trees files stream: one line is parsed, checked and handed on at a time, so memory does
not grow with the file. Flat-messages files may hold a tree's rows anywhere, so their rows are
grouped in memory (one dict per message) before trees are built.

Bad records never stop a ``skip`` read: each is reported (file, line, tree, message, reason) to
the reject sink and counted, and every valid tree is kept. With ``fail`` the first bad record
raises InputError, whose message names the file and line.
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import networkx as nx
import orjson

from convdistill.conversation_trees.ingest_report import (
    IngestReport,
    InputError,
    OnError,
    Reject,
    RejectSink,
)
from convdistill.conversation_trees.schema import (
    is_message_object,
    is_tree_object,
    message_type_error,
)
from convdistill.conversation_trees.tree_graph import (
    TreeError,
    tree_from_messages,
    tree_from_nested,
)

ProgressCallback = Callable[[int, int], None]  # (bytes read so far, total bytes)
GZIP_MAGIC = b"\x1f\x8b"


def open_export(path: str | Path) -> tuple[IO[bytes], IO[bytes]]:
    """Open a file for reading bytes, un-gzipping when its first bytes say gzip.

    Returns the stream to read and the raw file, whose position measures progress.
    """
    raw = open(path, "rb")  # noqa: SIM115 - the caller closes both streams
    if raw.read(2) == GZIP_MAGIC:
        raw.seek(0)
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw
    raw.seek(0)
    return io.BufferedReader(raw), raw  # type: ignore[arg-type]


def parse_line(line: bytes) -> tuple[Any, str | None, str | None]:
    """(object, reject kind, reason): the kind and reason are None when the line parsed."""
    try:
        return orjson.loads(line), None, None
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc) or "recursion" in str(exc):
            return (
                None,
                "too_deep",
                (
                    "nesting too deep to parse: more than 1024 JSON levels (about 500 turns); "
                    "write such a tree as flat messages instead"
                ),
            )
        return None, "malformed_json", f"malformed JSON: {exc}"


class TreeReader:
    """Iterate the trees of one export file; ``report`` holds the counts once iteration ends.

    >>> reader = TreeReader("export.jsonl.gz")
    >>> trees = list(reader); print(reader.report.summary())
    """

    def __init__(
        self,
        path: str | Path,
        *,
        on_error: OnError = "skip",
        on_reject: RejectSink | None = None,
        progress: ProgressCallback | None = None,
    ):
        if on_error not in ("skip", "fail"):
            raise ValueError(f"on_error must be 'skip' or 'fail', got {on_error!r}")
        self.path = Path(path)
        self.on_error = on_error
        self.on_reject = on_reject
        self.progress = progress
        self.report = IngestReport(file=str(path))

    def _reject(self, line: int, kind: str, reason: str, tree_id=None, message_id=None) -> None:
        reject = Reject(str(self.path), line, kind, reason, tree_id, message_id)
        self.report.records_rejected += 1
        self.report.reasons[kind] += 1
        if self.on_reject is not None:
            self.on_reject(reject)
        if self.on_error == "fail":
            raise InputError(reject)

    def _keep(self, graph: nx.DiGraph, records: int) -> nx.DiGraph:
        self.report.records_kept += records
        self.report.trees_kept += 1
        self.report.messages_kept += graph.number_of_nodes()
        return graph

    def __iter__(self) -> Iterator[nx.DiGraph]:
        stream, raw = open_export(self.path)
        total = self.path.stat().st_size
        flat_rows: list[tuple[int, dict[str, Any]]] = []
        try:
            for line_no, line in enumerate(stream, start=1):
                if self.progress is not None and line_no % 256 == 0:
                    self.progress(raw.tell(), total)
                if not line.strip():
                    continue
                self.report.records_read += 1
                obj, kind, reason = parse_line(line)
                if kind is not None:
                    self._reject(line_no, kind, reason)
                    continue
                if not isinstance(obj, dict):
                    self._reject(line_no, "unknown_object", "a line must hold a JSON object")
                    continue
                if self.report.format == "unknown":
                    self.report.format = (
                        "trees"
                        if is_tree_object(obj)
                        else "messages"
                        if is_message_object(obj)
                        else "unknown"
                    )
                if self.report.format == "trees":
                    tree = self._nested_line(line_no, obj)
                    if tree is not None:
                        yield tree
                elif self.report.format == "messages":
                    self._flat_row(line_no, obj, flat_rows)
                else:
                    self._reject(
                        line_no,
                        "unknown_object",
                        "neither a message tree (message_tree_id, prompt) "
                        "nor a message (message_id)",
                    )
            if flat_rows:
                yield from self._flat_trees(flat_rows)
        except (OSError, EOFError, zlib.error) as exc:  # a truncated gzip stream, for one
            self.report.records_read += 1
            self._reject(
                self.report.records_read, "unreadable", f"file cannot be read further: {exc}"
            )
        finally:
            stream.close()
            raw.close()
            if self.progress is not None:
                self.progress(total, total)

    # nested trees -------------------------------------------------------------------------
    def _nested_line(self, line_no: int, obj: dict[str, Any]) -> nx.DiGraph | None:
        tree_id = obj.get("message_tree_id")
        if not is_tree_object(obj):
            self._reject(
                line_no,
                "unknown_object",
                "a message row in a nested-trees file (the first record was a tree)",
                message_id=obj.get("message_id")
                if isinstance(obj.get("message_id"), str)
                else None,
            )
            return None
        try:
            return self._keep(tree_from_nested(obj), 1)
        except TreeError as exc:
            self._reject(line_no, exc.kind, exc.reason, _as_id(tree_id), exc.message_id)
            return None

    # flat messages ------------------------------------------------------------------------
    def _flat_row(self, line_no: int, obj: dict[str, Any], rows: list) -> None:
        if not is_message_object(obj):
            self._reject(
                line_no,
                "unknown_object",
                "a tree object in a flat-messages file (the first record was a message)",
                tree_id=_as_id(obj.get("message_tree_id")),
            )
            return
        problem = message_type_error(obj)
        if problem:
            self._reject(
                line_no,
                "schema",
                problem,
                _as_id(obj.get("message_tree_id")),
                _as_id(obj.get("message_id")),
            )
            return
        if "replies" in obj:
            self._reject(
                line_no,
                "schema",
                "a flat message must not hold 'replies'",
                message_id=obj["message_id"],
            )
            return
        rows.append((line_no, obj))

    def _flat_trees(self, rows: list[tuple[int, dict[str, Any]]]) -> Iterator[nx.DiGraph]:
        by_id: dict[str, tuple[int, dict[str, Any]]] = {}
        for line_no, row in rows:
            mid = row["message_id"]
            if mid in by_id:
                first = by_id[mid][0]
                self._reject(
                    line_no,
                    "duplicate_id",
                    f"duplicate message_id (first seen on line {first})",
                    _as_id(row.get("message_tree_id")),
                    mid,
                )
                continue
            by_id[mid] = (line_no, row)
        rows.clear()

        children: dict[str, list[str]] = defaultdict(list)
        roots: list[str] = []
        for mid, (_, row) in by_id.items():
            pid = row.get("parent_id")
            if pid is None:
                roots.append(mid)
            else:
                children[pid].append(mid)

        def in_export_order(ids: list[str]) -> list[str]:
            # Rows may be in any order: creation dates restore the export's order when every
            # sibling has one (real exports do); otherwise the file's row order is all we have.
            if all(by_id[m][1].get("created_date") for m in ids):
                return sorted(ids, key=lambda m: (by_id[m][1]["created_date"], by_id[m][0]))
            return sorted(ids, key=lambda m: by_id[m][0])

        for parent, kids in children.items():
            children[parent] = in_export_order(kids)
        placed: set[str] = set()
        for root in in_export_order(roots):
            tree_ids = [root]
            stack = [root]
            while stack:
                node = stack.pop()
                kids = children.get(node, [])
                tree_ids.extend(kids)
                stack.extend(kids)
            placed.update(tree_ids)
            tree = self._flat_tree(root, tree_ids, children, by_id)
            if tree is not None:
                yield tree
        for mid in by_id:
            if mid not in placed:
                self._reject_unplaced(mid, by_id)

    def _flat_tree(self, root, tree_ids, children, by_id) -> nx.DiGraph | None:
        root_row = by_id[root][1]
        fields = {
            "message_tree_id": root_row.get("message_tree_id") or root,
            "tree_state": root_row.get("tree_state"),
        }
        fields = {k: v for k, v in fields.items() if v is not None}
        strip = ("message_tree_id", "tree_state")  # tree fields repeated on each flat row
        messages = {
            mid: {k: v for k, v in by_id[mid][1].items() if k not in strip} for mid in tree_ids
        }
        kids = {mid: [messages[c] for c in children.get(mid, ())] for mid in tree_ids}
        try:
            graph = tree_from_messages(fields, messages[root], kids)
        except TreeError as exc:
            for mid in tree_ids:
                self._reject(
                    by_id[mid][0],
                    exc.kind,
                    exc.reason,
                    fields["message_tree_id"],
                    exc.message_id or mid,
                )
            return None
        for mid in tree_ids:
            row_tree = by_id[mid][1].get("message_tree_id")
            if row_tree is not None and row_tree != fields["message_tree_id"]:
                for m in tree_ids:
                    self._reject(
                        by_id[m][0],
                        "schema",
                        f"message {mid} says tree {row_tree} but hangs under root {root}",
                        fields["message_tree_id"],
                        m,
                    )
                return None
        return self._keep(graph, len(tree_ids))

    def _reject_unplaced(self, mid: str, by_id) -> None:
        """A row not reachable from any root: its parent chain ends at a missing id or loops."""
        seen = {mid}
        node = mid
        line_no, row = by_id[mid]
        tree_id = _as_id(row.get("message_tree_id"))
        while True:
            pid = by_id[node][1].get("parent_id")
            if pid not in by_id:
                reason = f"orphan: parent {pid!r} is not in the file (or was rejected)"
                if node != mid:
                    reason = (
                        f"orphan: ancestor {node!r} has parent {pid!r}, "
                        "not in the file (or rejected)"
                    )
                self._reject(line_no, "orphan", reason, tree_id, mid)
                return
            if pid in seen:
                self._reject(
                    line_no, "cycle", f"cycle: the parent chain returns to {pid!r}", tree_id, mid
                )
                return
            seen.add(pid)
            node = pid


def _as_id(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def read_trees(path: str | Path, **kwargs: Any) -> list[nx.DiGraph]:
    """All kept trees of a file as a list (small files, tests); see TreeReader for streaming."""
    return list(TreeReader(path, **kwargs))
