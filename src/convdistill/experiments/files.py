"""Files of an experiment run: JSON lines out (in: `trainers.data.read_jsonl`), the shipped inputs
wherever the package keeps them, and the progress log."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import orjson

from convdistill.resources import shipped_file
from convdistill.trainers.data import read_jsonl

__all__ = ["project_file", "read_jsonl", "stderr_log", "write_jsonl"]


def stderr_log(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def project_file(name: str) -> Path:
    """A path as given when it exists, else the shipped file (the sample, the suites) wherever
    the package keeps it."""
    path = Path(name)
    if path.is_absolute() or path.exists():
        return path
    return shipped_file(name)
