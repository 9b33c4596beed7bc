"""Write path or pair records to JSONL, parquet or a Hugging Face ``datasets`` folder.

Records stream out (JSONL line by line, parquet in row groups), so memory stays flat. With a
split, each side goes to its own file: ``out.jsonl`` -> ``out.train.jsonl`` and
``out.validation.jsonl``; a ``datasets`` folder becomes a DatasetDict with both splits.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import IO, Any, Literal

import orjson
import pyarrow as pa

from convdistill.errors import BadRecipe
from convdistill.files import open_binary

OutputFormat = Literal["jsonl", "parquet", "datasets"]
OUTPUT_FORMATS = ("jsonl", "parquet", "datasets")

_MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
PATH_SCHEMA = pa.schema(
    [
        ("messages", _MESSAGES),
        ("tree_id", pa.string()),
        ("message_ids", pa.list_(pa.string())),
        ("score", pa.float64()),
        ("lang", pa.string()),
        ("ranks", pa.list_(pa.int64())),
        ("synthetic", pa.list_(pa.bool_())),
        ("model_names", pa.list_(pa.string())),
    ]
)
PAIR_SCHEMA = pa.schema(
    [
        ("prompt", _MESSAGES),
        ("chosen", _MESSAGES),
        ("rejected", _MESSAGES),
        ("tree_id", pa.string()),
        ("parent_id", pa.string()),
        ("prompt_ids", pa.list_(pa.string())),
        ("chosen_id", pa.string()),
        ("rejected_id", pa.string()),
        ("chosen_rank", pa.int64()),
        ("rejected_rank", pa.int64()),
        ("chosen_synthetic", pa.bool_()),
        ("rejected_synthetic", pa.bool_()),
        ("lang", pa.string()),
        ("ranked_by", pa.string()),
    ]
)


def infer_format(out: Path) -> OutputFormat:
    name = out.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz")):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    return "datasets"


def split_path(out: Path, split: str) -> Path:
    """``data/x.jsonl.gz`` -> ``data/x.train.jsonl.gz``."""
    name = out.name
    for suffix in (".jsonl.gz", ".json.gz", ".jsonl", ".json", ".parquet"):
        if name.lower().endswith(suffix):
            return out.with_name(name[: -len(suffix)] + f".{split}" + name[-len(suffix) :])
    return out / split


class _JsonlFile:
    def __init__(self, path: Path):
        self.stream: IO[bytes] = open_binary(path, "wb")

    def write(self, record: dict[str, Any]) -> None:
        self.stream.write(orjson.dumps(record) + b"\n")

    def write_line(self, line: bytes) -> None:
        self.stream.write(line)

    def close(self) -> None:
        self.stream.close()


class _ParquetFile:
    ROW_GROUP = 2048

    def __init__(self, path: Path, schema: pa.Schema):
        import pyarrow.parquet as pq  # slow to import; JSONL output does not need it

        path.parent.mkdir(parents=True, exist_ok=True)
        self.schema = schema
        self.writer = pq.ParquetWriter(path, schema)
        self.buffer: list[dict[str, Any]] = []

    def write(self, record: dict[str, Any]) -> None:
        self.buffer.append(record)
        if len(self.buffer) >= self.ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if self.buffer:
            self.writer.write_table(pa.Table.from_pylist(self.buffer, schema=self.schema))
            self.buffer = []

    def close(self) -> None:
        self._flush()
        self.writer.close()


class RecordSink:
    """Context manager: ``sink.write(record, split)``; ``counts`` says how many went where."""

    def __init__(
        self,
        out: str | Path,
        schema: pa.Schema,
        fmt: OutputFormat | None = None,
        split: bool = False,
    ):
        self.out = Path(out)
        self.fmt: OutputFormat = fmt or infer_format(self.out)
        if self.fmt not in OUTPUT_FORMATS:
            raise BadRecipe(
                f"unknown output format {self.fmt!r}; choose from {', '.join(OUTPUT_FORMATS)}"
            )
        self.schema = schema
        self.split = split
        self.counts: Counter[str] = Counter()
        self._files: dict[str, _JsonlFile | _ParquetFile] = {}
        self._staging: Path | None = None

    def _file_for(self, split: str) -> _JsonlFile | _ParquetFile:
        if split not in self._files:
            if self.fmt == "jsonl":
                target = split_path(self.out, split) if self.split else self.out
                self._files[split] = _JsonlFile(target)
            elif self.fmt == "parquet":
                target = split_path(self.out, split) if self.split else self.out
                self._files[split] = _ParquetFile(target, self.schema)
            else:
                if self._staging is None:
                    self._staging = Path(tempfile.mkdtemp(prefix="convdistill-"))
                self._files[split] = _ParquetFile(self._staging / f"{split}.parquet", self.schema)
        return self._files[split]

    def write(self, record: dict[str, Any], split: str = "train") -> None:
        key = split if self.split else "train"
        self._file_for(key).write(record)
        self.counts[key] += 1

    def write_json_line(self, line: bytes, split: str = "train") -> None:
        """A record already encoded as one JSON line (JSONL output only)."""
        key = split if self.split else "train"
        target = self._file_for(key)
        assert isinstance(target, _JsonlFile), "write_json_line is for JSONL output"
        target.write_line(line)
        self.counts[key] += 1

    def __enter__(self) -> RecordSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close(write_folder=exc_info[0] is None)

    def close(self, write_folder: bool = True) -> None:
        if not self._files:
            # Nothing selected: still leave a valid, empty output behind.
            self._file_for("train")
            if self.split:
                self._file_for("validation")
        for f in self._files.values():
            f.close()
        if self.fmt == "datasets" and self._staging is not None:
            try:
                if write_folder:
                    self._save_dataset_folder()
            finally:
                shutil.rmtree(self._staging, ignore_errors=True)

    def _save_dataset_folder(self) -> None:
        import datasets  # slow to import; only this output needs it
        import pyarrow.parquet as pq

        assert self._staging is not None
        parts = {
            split: datasets.Dataset(pq.read_table(self._staging / f"{split}.parquet"))
            for split in self._files
        }
        if self.out.exists():
            shutil.rmtree(self.out)
        if self.split:
            datasets.DatasetDict(parts).save_to_disk(str(self.out))
        else:
            parts["train"].save_to_disk(str(self.out))
