"""Opening and writing the project's data files: JSON lines, gzipped when the name ends in .gz;
whole files written atomically; markers of finished work.

(The export readers go by a file's first bytes instead, since an export downloaded from
elsewhere may be gzipped under any name; see conversation_trees.readers.)
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Literal

import orjson

from convdistill.resources import shipped_file


def project_file(name: str | Path) -> Path:
    """A path as given when it exists (or is absolute), else the file that ships with
    convdistill under that name (the sample export, recipes, suites): the wheel's copy when
    installed, the checkout's otherwise (`resources.shipped_file`)."""
    path = Path(name)
    if path.is_absolute() or path.exists():
        return path
    return shipped_file(path)


def open_binary(path: str | Path, mode: Literal["rb", "wb"] = "rb") -> IO[bytes]:
    """A binary stream of `path`, through gzip when its name ends in .gz. Writing makes the
    file's folder first."""
    path = Path(path)
    if mode == "wb":
        path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        return gzip.open(path, mode)  # type: ignore[return-value]
    return open(path, mode)


class StagedFile:
    """A partial file beside `path`, for a writer that learns only at its end whether the file is
    whole: `commit` renames it onto `path`, `discard` removes it. The partial keeps `path`'s last
    suffix, so a `.gz` name is still gzipped by name; it lies in `path`'s folder, so the rename
    stays on one file system and is atomic.

    `per_process`: the partial's name carries the process id, so the processes of one
    distributed run each write their own. Without it the name is fixed, for a run that may be
    killed (-9) and started again: the rerun overwrites the partial the killed one left."""

    def __init__(self, path: str | Path, per_process: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        pid = f".{os.getpid()}" if per_process else ""
        self.partial = self.path.with_name(f".{self.path.stem}{pid}.partial{self.path.suffix}")

    def commit(self) -> None:
        os.replace(self.partial, self.path)

    def discard(self) -> None:
        self.partial.unlink(missing_ok=True)


@contextlib.contextmanager
def write_atomically(path: str | Path, per_process: bool = True) -> Iterator[Path]:
    """A partial file beside `path` to write (see `StagedFile`); renamed onto `path` when the
    block ends without an error, removed when it raises. Readers never see half a file, and a
    failed run leaves none behind."""
    staged = StagedFile(path, per_process)
    try:
        yield staged.partial
    except BaseException:
        staged.discard()
        raise
    staged.commit()


def write_jsonl(path: str | Path, records: Iterable[Any], gzip_by_name: bool = True) -> Path:
    """`records` as JSON lines, the whole file or nothing; gzipped when the name ends in .gz,
    unless `gzip_by_name` is false (a format whose readers take plain lines under any name).
    Returns `path`."""
    path = Path(path)
    with write_atomically(path) as partial, (
            open_binary(partial, "wb") if gzip_by_name else open(partial, "wb")) as stream:
        for record in records:
            stream.write(orjson.dumps(record) + b"\n")
    return path


def write_json(path: str | Path, data: Any) -> Path:
    """`data` as indented JSON and a newline, the whole file or nothing; returns `path`."""
    path = Path(path)
    with write_atomically(path) as partial:
        partial.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
    return path


def read_json(path: str | Path) -> Any | None:
    """A JSON file's value; None when it is missing, unreadable or cut short (a marker of work
    that was interrupted counts as no marker)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def fingerprint(settings: Any) -> str:
    """A short stable hash of settings (JSON-able; other values by their str): what a marker of
    finished work is keyed by, so that changing a setting redoes what depends on it."""
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class DoneMarker:
    """A JSON file saying that a piece of work finished under `key` (a fingerprint of its
    settings and inputs): a rerun under the same key skips the work, under another key redoes
    it. The key sits in the marker under `field`, beside whatever the work records; the marker
    is written atomically, so an interrupted write leaves none."""

    def __init__(self, path: str | Path, key: Any, field: str = "key"):
        self.path = Path(path)
        self.key = key
        self.field = field

    def recorded(self) -> dict[str, Any] | None:
        """What the marker holds, under whichever key; None when there is none that parses."""
        record = read_json(self.path)
        return record if isinstance(record, dict) else None

    def done(self) -> dict[str, Any] | None:
        """The marker's record when the work finished under this key; else None (no marker, one
        from other settings, or one that does not parse)."""
        record = self.recorded()
        return record if record is not None and record.get(self.field) == self.key else None

    def mark(self, record: dict[str, Any]) -> None:
        """Write the marker: `record` with the key under `field` (kept where the record has it)."""
        record[self.field] = self.key
        with write_atomically(self.path) as partial:
            partial.write_text(json.dumps(record, indent=2, default=str) + "\n")

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
