"""Opening the project's data files: JSON lines, gzipped when the name ends in .gz.

(The export readers go by a file's first bytes instead, since an export downloaded from
elsewhere may be gzipped under any name; see conversation_trees.readers.)
"""

from __future__ import annotations

import gzip
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
