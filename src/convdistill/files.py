"""Opening and writing the project's data files: JSON lines, gzipped when the name ends in .gz;
whole files written atomically.

(The export readers go by a file's first bytes instead, since an export downloaded from
elsewhere may be gzipped under any name; see conversation_trees.readers.)
"""

from __future__ import annotations

import contextlib
import gzip
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Literal


def open_binary(path: str | Path, mode: Literal["rb", "wb"] = "rb") -> IO[bytes]:
    """A binary stream of `path`, through gzip when its name ends in .gz. Writing makes the
    file's folder first."""
    path = Path(path)
    if mode == "wb":
        path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        return gzip.open(path, mode)  # type: ignore[return-value]
    return open(path, mode)


@contextlib.contextmanager
def write_atomically(path: str | Path) -> Iterator[Path]:
    """A partial file beside `path` to write; renamed onto `path` when the block ends without an
    error, removed when it raises. Readers never see half a file, a failed run leaves none behind,
    and processes of one distributed run each write their own partial (it carries the process
    id). The partial keeps `path`'s last suffix, so a `.gz` name is still gzipped by name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")
    try:
        yield partial
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, path)
