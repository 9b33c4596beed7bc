"""Read conversation trees from any input we know, recognised by content, into checked DiGraphs.

Inputs: Open-Assistant exports (nested trees or flat messages, JSONL, gzipped or not), the Hub's
Open-Assistant parquet layouts (``hub``), and chat histories and linear chat datasets
(``chat_exports``). Whatever the source, trees go through the same checker.

Nested-trees files stream: one line is parsed, checked and handed on at a time, so memory does
not grow with the file. Flat inputs (flat messages, parquet) may hold a tree's rows anywhere;
their rows are grouped in memory while small and in bucket files on disk once large
(``flat_groups``), so memory does not grow with them either. Chat exports are single JSON
documents and are parsed whole (their size is a person's history, not a corpus).

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
import pyarrow as pa

from convdistill.conversation_trees.chat_exports import (
    CHAT_FORMATS,
    PARSERS,
    ConversationError,
    chat_format_of,
    chatbot_ui_history,
    conversation_trees,
    is_record_of,
)
from convdistill.conversation_trees.flat_groups import SPILL_BYTES, FlatRows
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
from convdistill.errors import BadInput, BadRecipe

ProgressCallback = Callable[[int, int], None]  # (bytes read so far, total bytes)
GZIP_MAGIC = b"\x1f\x8b"
ACCEPTED = (
    "Open-Assistant nested trees, message trees or flat messages (JSONL), the Hub's parquet "
    "(Open-Assistant messages, or chat datasets with messages/conversations; file, folder or "
    "save_to_disk), ChatGPT conversations.json, Open WebUI, LibreChat or Chatbot UI exports, "
    "TRL messages or ShareGPT records"
)


class UnknownFormatError(BadInput):
    """An input none of whose records is of a format we read; one line, naming the formats."""

    def __init__(self, path: str | Path, detail: str = "no record of a known format"):
        super().__init__(f"{path}: {detail}; accepted: {ACCEPTED}")


def detect_layout(path: Path) -> str:
    """How an input is laid out, by content: hub-parquet, hub-datasets, json or lines."""
    from convdistill.conversation_trees.hub import is_parquet_file, is_save_to_disk_folder

    if path.is_dir():
        if is_save_to_disk_folder(path):
            return "hub-datasets"
        if next(path.rglob("*.parquet"), None) is not None:
            return "hub-parquet"
        raise UnknownFormatError(path, "a folder with no parquet files and no save_to_disk layout")
    if is_parquet_file(path):
        return "hub-parquet"
    stream, raw = open_export(path)
    try:
        head = stream.read(1 << 16)
        first_line = head.split(b"\n", 1)[0] if b"\n" in head else None
    except (OSError, EOFError, zlib.error):
        return "lines"  # the line reader reports what can and cannot be read
    finally:
        stream.close()
        raw.close()
    start = head.lstrip()[:1]
    more_lines = any(line.strip() for line in head.split(b"\n")[1:])
    if start == b"[":
        # a whole JSON line followed by more lines: JSON lines whose first record is an array
        # (reported as a reject), not one document (ChatGPT's export is one array)
        if first_line is not None and more_lines and parse_line(first_line)[1] is None:
            return "lines"
        return "json"
    if start == b"{":
        # One JSON object per line, or one document over many lines (pretty-printed).
        if first_line is not None and parse_line(first_line)[1] is None:
            return "lines"
        return "json" if first_line is not None or len(head) < (1 << 16) else "lines"
    if not start:
        return "lines"  # empty: nothing read, nothing rejected
    if any(parse_line(line)[1] is None for line in head.split(b"\n")[1:-1] if line.strip()):
        # JSON lines whose first line is damaged: the line reader keeps the rest and reports it
        return "lines"
    raise UnknownFormatError(path, "neither JSON, JSON lines nor parquet")


def record_format(obj: dict[str, Any]) -> str | None:
    """The format one record belongs to: trees, message trees, messages, or a chat format."""
    chat = chat_format_of(obj)
    # ultrachat_200k's records carry a `prompt` string beside `messages`: a chat record, not a tree
    if is_tree_object(obj) and not (chat is not None and isinstance(obj.get("prompt"), str)):
        return "trees"
    if is_message_object(obj):
        # Open-Assistant's own message files: a root message a line, its replies nested
        return "message-trees" if isinstance(obj.get("replies"), list) else "messages"
    return chat


def open_export(path: str | Path) -> tuple[IO[bytes], IO[bytes]]:
    """Open a file for reading bytes, un-gzipping when its first bytes say gzip.

    Returns the stream to read and the raw file, whose position measures progress.
    """
    raw = open(path, "rb")  # noqa: SIM115 - the caller closes both streams
    if raw.read(2) == GZIP_MAGIC:
        raw.seek(0)
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw  # type: ignore[return-value]  # a GzipFile reads bytes
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
        split: str | None = None,
        redact: Callable[[nx.DiGraph], Any] | None = None,
        spill_bytes: int = SPILL_BYTES,
    ):
        if on_error not in ("skip", "fail"):
            raise BadRecipe(f"on_error must be 'skip' or 'fail', got {on_error!r}")
        self.path = Path(path)
        self.on_error = on_error
        self.on_reject = on_reject
        self.progress = progress
        self.split = split  # the Hub layouts: read one split of a folder
        self.redact = redact  # called on each kept tree before anyone sees it (--redact)
        self.spill_bytes = spill_bytes
        self.report = IngestReport(file=str(path))
        self._files: list[tuple[int, Path]] = [(0, self.path)]

    def _where(self, number: int) -> tuple[str, int]:
        """(file, line or row) of a record number; a Hub folder numbers rows across files."""
        for start, file in reversed(self._files):
            if number > start:
                return str(file), number - start
        return str(self.path), number

    def _redact(self, graph: nx.DiGraph) -> None:
        if self.redact is not None:
            self.report.redacted.update(self.redact(graph))

    def _reject(self, line: int, kind: str, reason: str, tree_id=None, message_id=None) -> None:
        file, line = self._where(line)
        reject = Reject(file, line, kind, reason, tree_id, message_id)
        self.report.records_rejected += 1
        self.report.reasons[kind] += 1
        if self.on_reject is not None:
            self.on_reject(reject)
        if self.on_error == "fail":
            raise InputError(reject)

    def _keep(self, graph: nx.DiGraph, records: int) -> nx.DiGraph:
        self._redact(graph)
        self.report.records_kept += records
        self.report.trees_kept += 1
        self.report.messages_kept += graph.number_of_nodes()
        return graph

    def __iter__(self) -> Iterator[nx.DiGraph]:
        layout = detect_layout(self.path)
        self.report.format = "unknown"
        self._files = [(0, self.path)]
        if layout in ("hub-parquet", "hub-datasets"):
            yield from self._hub_trees(layout)
        elif layout == "json":
            yield from self._json_document()
        else:
            yield from self._lines()

    def _lines(self) -> Iterator[nx.DiGraph]:
        """JSON lines: Open-Assistant trees or messages, or one chat conversation per line."""
        stream, raw = open_export(self.path)
        total = self.path.stat().st_size
        flat = self._flat_rows(lambda: raw.tell() / max(total, 1))
        try:
            for line_no, line in enumerate(stream, start=1):
                if self.progress is not None and line_no % 256 == 0:
                    self.progress(raw.tell(), total)
                if not line.strip():
                    continue
                self.report.records_read += 1
                obj, kind, reason = parse_line(line)
                if kind is not None:
                    self._reject(line_no, kind, reason or kind)
                    continue
                if not isinstance(obj, dict):
                    self._reject(line_no, "unknown_object", "a line must hold a JSON object")
                    continue
                if self.report.format == "unknown":
                    self.report.format = record_format(obj) or "unknown"
                if self.report.format == "trees":
                    tree = self._nested_line(line_no, obj)
                    if tree is not None:
                        yield tree
                elif self.report.format == "messages":
                    self._flat_row(line_no, obj, flat, len(line))
                elif self.report.format == "message-trees":
                    tree = self._message_tree_line(line_no, obj)
                    if tree is not None:
                        yield tree
                elif self.report.format in CHAT_FORMATS:
                    yield from self._conversation(line_no, obj)
                else:
                    self._reject(line_no, "unknown_object", f"not a record of {ACCEPTED}")
            yield from self._flat_groups(flat)
        except (OSError, EOFError, zlib.error) as exc:  # a truncated gzip stream, for one
            self.report.records_read += 1
            self._reject(self.report.records_read, "unreadable", f"file cannot be read further: {exc}")
        finally:
            flat.close()
            stream.close()
            raw.close()
            if self.progress is not None:
                self.progress(total, total)
        self._check_recognised()

    def _check_recognised(self) -> None:
        """A file none of whose records is of a known kind gets one line naming the formats."""
        if self.report.format == "unknown" and set(self.report.reasons) == {"unknown_object"}:
            raise UnknownFormatError(self.path)

    # whole JSON documents (ChatGPT conversations.json, Open WebUI and LibreChat exports) ------
    def _json_document(self) -> Iterator[nx.DiGraph]:
        stream, raw = open_export(self.path)
        try:
            data = stream.read()
        except (OSError, EOFError, zlib.error) as exc:
            self.report.records_read += 1
            self._reject(1, "unreadable", f"file cannot be read: {exc}")
            return
        finally:
            stream.close()
            raw.close()
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            if data.lstrip()[:1] == b"{":  # JSON lines whose first line is damaged
                yield from self._lines()
                return
            self.report.records_read += 1
            self._reject(1, "malformed_json", f"malformed JSON (truncated file?): {exc}")
            return
        del data
        records = chatbot_ui_history(doc)
        if records is not None:
            self.report.format = "chatbot-ui"
        else:
            records = doc if isinstance(doc, list) else [doc]
        for index, obj in enumerate(records, start=1):
            self.report.records_read += 1
            if not isinstance(obj, dict):
                self._reject(index, "unknown_object", f"conversation {index} is not an object")
                continue
            if self.report.format == "unknown":
                self.report.format = record_format(obj) or "unknown"
            if self.report.format in CHAT_FORMATS:
                yield from self._conversation(index, obj)
            elif self.report.format == "trees":
                tree = self._nested_line(index, obj)
                if tree is not None:
                    yield tree
            else:
                self._reject(index, "unknown_object", f"not a record of {ACCEPTED}")
        if self.progress is not None:
            self.progress(1, 1)
        self._check_recognised()

    def _conversation(self, number: int, obj: dict[str, Any]) -> Iterator[nx.DiGraph]:
        """One chat record -> its tree(s); a bad one is rejected whole, naming the conversation."""
        fmt = self.report.format
        if not is_record_of(fmt, obj):
            self._reject(number, "unknown_object", f"not a {fmt} conversation (the first was)")
            return
        conv_id = None
        try:
            conv = PARSERS[fmt](obj, number)
            conv_id = conv.id
            tree_objs, skipped = conversation_trees(conv)
            graphs = [tree_from_nested(t) for t in tree_objs]
        except ConversationError as exc:
            self._reject(number, "conversation", f"conversation {conv_id or number}: {exc}", conv_id)
            return
        except TreeError as exc:
            reason = f"conversation {conv_id or number}: {exc.reason}"
            self._reject(number, exc.kind, reason, conv_id, exc.message_id)
            return
        self.report.skipped.update(skipped)
        self.report.records_kept += 1
        for graph in graphs:
            self._redact(graph)
            self.report.trees_kept += 1
            self.report.messages_kept += graph.number_of_nodes()
            yield graph

    # the Hub's layout: parquet files or a save_to_disk folder ------------------------------
    def _hub_trees(self, layout: str) -> Iterator[nx.DiGraph]:
        from convdistill.conversation_trees.hub import hub_chat_format, hub_files, hub_row_count

        files = hub_files(self.path, self.split)
        # Chat datasets (a `messages` or `conversations` column) hold a conversation a row;
        # Open-Assistant's hold a message a row. The first file says which, and all must agree.
        chat = hub_chat_format(files[0]) if files else None
        self.report.format = chat or layout
        total = hub_row_count(files) or 1
        flat = self._flat_rows(lambda: self.report.records_read / total)
        self._files = []
        try:
            for file in files:
                self._files.append((self.report.records_read, file))
                try:
                    if hub_chat_format(file) != chat:
                        raise BadInput(f"{file}: its columns are not those of {files[0]} "
                                       f"({chat or 'Open-Assistant messages'})")
                    if chat is None:
                        self._hub_file_rows(file, flat, total)
                    else:
                        yield from self._hub_conversations(file, total)
                except (OSError, pa.ArrowException) as exc:  # a truncated or damaged file
                    self.report.records_read += 1
                    self._reject(
                        self.report.records_read,
                        "unreadable",
                        f"file cannot be read further: {str(exc).splitlines()[0]}",
                    )
            yield from self._flat_groups(flat)
        finally:
            flat.close()
            if self.progress is not None:
                self.progress(total, total)

    def _hub_conversations(self, file: Path, total: int) -> Iterator[nx.DiGraph]:
        """One conversation a row, each made a tree as it is read: memory stays one record batch."""
        from convdistill.conversation_trees.hub import iter_hub_rows

        for row in iter_hub_rows(file):
            self.report.records_read += 1
            number = self.report.records_read
            if self.progress is not None and number % 4096 == 0:
                self.progress(number, total)
            yield from self._conversation(number, row)

    def _hub_file_rows(self, file: Path, flat: FlatRows, total: int) -> None:
        """Hand one file's rows to the flat grouper; trees are built once all files are read."""
        from convdistill.conversation_trees.hub import hub_row_to_message, iter_hub_rows

        for row in iter_hub_rows(file):
            self.report.records_read += 1
            number = self.report.records_read
            if self.progress is not None and number % 4096 == 0:
                self.progress(number, total)
            try:
                message = hub_row_to_message(row)
            except ValueError as exc:
                tree, mid = _as_id(row.get("message_tree_id")), _as_id(row.get("message_id"))
                self._reject(number, "schema", f"emojis or labels: {exc}", tree, mid)
                continue
            self._flat_row(number, message, flat, len(message.get("text") or "") + 400)

    # nested trees -------------------------------------------------------------------------
    def _nested_line(self, line_no: int, obj: dict[str, Any]) -> nx.DiGraph | None:
        tree_id = obj.get("message_tree_id")
        if not is_tree_object(obj):
            self._reject(
                line_no,
                "unknown_object",
                "a message row in a nested-trees file (the first record was a tree)",
                message_id=obj.get("message_id") if isinstance(obj.get("message_id"), str) else None,
            )
            return None
        try:
            return self._keep(tree_from_nested(obj), 1)
        except TreeError as exc:
            self._reject(line_no, exc.kind, exc.reason, _as_id(tree_id), exc.message_id)
            return None

    def _message_tree_line(self, line_no: int, obj: dict[str, Any]) -> nx.DiGraph | None:
        """A root message with its replies nested, as Open-Assistant's ``read_oasst_jsonl`` reads
        it: the whole tree from that root. The line names no tree state; it is read as
        ``ready_for_export``, as chat exports are, so that the default filters keep it."""
        mid = _as_id(obj.get("message_id"))
        if not is_message_object(obj):
            self._reject(line_no, "unknown_object", "a tree object in a file of message trees "
                         "(the first record was a message with nested replies)",
                         tree_id=_as_id(obj.get("message_tree_id")))
            return None
        if obj.get("parent_id") is not None:
            self._reject(line_no, "schema", "a reply in a file of message trees: each line must be a "
                         "root message (parent_id null) with its replies nested", message_id=mid)
            return None
        prompt = {k: v for k, v in obj.items() if k not in ("message_tree_id", "tree_state")}
        tree = {"message_tree_id": obj.get("message_tree_id") or mid,
                "tree_state": obj.get("tree_state") or "ready_for_export", "prompt": prompt}
        try:
            return self._keep(tree_from_nested(tree), 1)
        except TreeError as exc:
            self._reject(line_no, exc.kind, exc.reason, _as_id(tree["message_tree_id"]), exc.message_id)
            return None

    # flat messages ------------------------------------------------------------------------
    def _flat_rows(self, done_fraction: Callable[[], float]) -> FlatRows:
        def unkeyed(number: int, row: dict[str, Any]) -> None:
            self._reject(
                number,
                "schema",
                "no message_tree_id: a flat input this large is grouped by tree id (only a root may omit it)",
                message_id=_as_id(row.get("message_id")),
            )

        return FlatRows(done_fraction, unkeyed, spill_bytes=self.spill_bytes)

    def _flat_groups(self, flat: FlatRows) -> Iterator[nx.DiGraph]:
        for rows in flat.groups():
            yield from self._flat_trees(rows)

    def _flat_row(self, line_no: int, obj: dict[str, Any], rows: FlatRows, size: int) -> None:
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
        rows.add(line_no, obj, size)

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
        messages = {mid: {k: v for k, v in by_id[mid][1].items() if k not in strip} for mid in tree_ids}
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
                    reason = f"orphan: ancestor {node!r} has parent {pid!r}, not in the file (or rejected)"
                self._reject(line_no, "orphan", reason, tree_id, mid)
                return
            if pid in seen:
                self._reject(line_no, "cycle", f"cycle: the parent chain returns to {pid!r}", tree_id, mid)
                return
            seen.add(pid)
            node = pid


def _as_id(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def read_trees(path: str | Path, **kwargs: Any) -> list[nx.DiGraph]:
    """All kept trees of a file as a list (small files, tests); see TreeReader for streaming."""
    return list(TreeReader(path, **kwargs))
