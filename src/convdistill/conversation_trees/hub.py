"""Open-Assistant as the Hugging Face Hub stores it: parquet files of flat messages.

oasst1 and oasst2 on the Hub are one row per message (``data/train-*.parquet``,
``data/validation-*.parquet``) with the columns of the flat JSONL export, except that nulls stand
for missing fields and two fields change shape: ``emojis`` and ``labels`` are structs of parallel
lists (``{"name": [...], "count": [...]}``, ``{"name": [...], "value": [...], "count": [...]}``)
where the JSONL export has objects keyed by name. ``hub_row_to_message`` turns a row back into
the JSONL message, so the flat reader, its checks and everything downstream stay one code path.

Chat datasets as the Hub ships them (``messages`` of ``{role, content}``, as ultrachat_200k and
TRL's conversational datasets; ShareGPT's ``conversations``) are one conversation a row; the
reader hands those rows to the chat parsers (``hub_chat_format`` tells them apart by columns).

Three layouts are read: one parquet file, a folder of them (the Hub's ``data/`` layout, every
split or one), and a ``datasets.save_to_disk`` folder (arrow files, one sub-folder per split for a
DatasetDict). Rows stream in record batches: nothing here holds a whole file.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import networkx as nx
import pyarrow as pa
import pyarrow.parquet as pq

from convdistill.conversation_trees.writers import tree_to_messages
from convdistill.errors import BadInput, BadRecipe

PARQUET_MAGIC = b"PAR1"
BATCH_ROWS = 4096

# The Hub's columns, in the Hub's order, with the types its dataset card declares.
_EMOJIS = pa.struct([("name", pa.list_(pa.string())), ("count", pa.list_(pa.int32()))])
_LABELS = pa.struct(
    [
        ("name", pa.list_(pa.string())),
        ("value", pa.list_(pa.float64())),
        ("count", pa.list_(pa.int32())),
    ]
)
DETOXIFY_FIELDS = (
    "toxicity",
    "severe_toxicity",
    "obscene",
    "identity_attack",
    "insult",
    "threat",
    "sexual_explicit",
)
HUB_SCHEMA = pa.schema(
    [
        ("message_id", pa.string()),
        ("parent_id", pa.string()),
        ("user_id", pa.string()),
        ("created_date", pa.string()),
        ("text", pa.string()),
        ("role", pa.string()),
        ("lang", pa.string()),
        ("review_count", pa.int32()),
        ("review_result", pa.bool_()),
        ("deleted", pa.bool_()),
        ("rank", pa.int32()),
        ("synthetic", pa.bool_()),
        ("model_name", pa.string()),
        ("detoxify", pa.struct([(f, pa.float64()) for f in DETOXIFY_FIELDS])),
        ("message_tree_id", pa.string()),
        ("tree_state", pa.string()),
        ("emojis", _EMOJIS),
        ("labels", _LABELS),
    ]
)


def _lists_to_dict(value: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any] | None:
    """{"name": [a, b], "count": [1, 2]} -> {a: ..., b: ...}; a struct with a missing list is
    read as empty (a writer that nulls an empty list means the same)."""
    names = value.get("name") or []
    columns = {k: value.get(k) or [] for k in keys}
    if any(len(col) not in (0, len(names)) for col in columns.values()):
        raise BadInput(f"lists of unequal length in {sorted(value)}")
    if len(keys) == 1:
        return dict(zip(names, columns[keys[0]], strict=False))
    return {name: {k: columns[k][i] for k in keys if i < len(columns[k])} for i, name in enumerate(names)}


def hub_row_to_message(row: dict[str, Any]) -> dict[str, Any]:
    """One Hub row as the JSONL export writes that message: nulls dropped, structs of lists
    turned into objects, a float rank that is whole (some conversions write 0.0) made an int."""
    message: dict[str, Any] = {}
    for name, value in row.items():
        if value is None:
            continue
        if name == "emojis" and isinstance(value, dict):
            message[name] = _lists_to_dict(value, ("count",))
        elif name == "labels" and isinstance(value, dict):
            message[name] = _lists_to_dict(value, ("value", "count"))
        elif name == "detoxify" and isinstance(value, dict):
            message[name] = dict(value)
        elif name in ("rank", "review_count") and isinstance(value, float) and value.is_integer():
            message[name] = int(value)
        else:
            message[name] = value
    return message


def message_to_hub_row(message: dict[str, Any]) -> dict[str, Any]:
    """The inverse: a JSONL message (flat, with tree fields) as a row of ``HUB_SCHEMA``."""
    row: dict[str, Any] = {name: message.get(name) for name in HUB_SCHEMA.names}
    emojis = message.get("emojis")
    if isinstance(emojis, dict):
        row["emojis"] = {"name": list(emojis), "count": list(emojis.values())}
    labels = message.get("labels")
    if isinstance(labels, dict):
        row["labels"] = {
            "name": list(labels),
            "value": [item.get("value") for item in labels.values()],
            "count": [item.get("count") for item in labels.values()],
        }
    return row


def write_hub_parquet(path: str | Path, trees: Iterable[nx.DiGraph]) -> int:
    """Write trees as one Hub-layout parquet file (flat rows, parents first); returns rows.

    Fields outside the Hub's columns (``events``, unknown keys) are not carried, as on the Hub.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = 0
    with pq.ParquetWriter(path, HUB_SCHEMA) as writer:
        batch: list[dict[str, Any]] = []
        for graph in trees:
            batch.extend(message_to_hub_row(m) for m in tree_to_messages(graph))
            if len(batch) >= BATCH_ROWS:
                writer.write_table(pa.Table.from_pylist(batch, schema=HUB_SCHEMA))
                rows += len(batch)
                batch = []
        if batch:
            writer.write_table(pa.Table.from_pylist(batch, schema=HUB_SCHEMA))
            rows += len(batch)
    return rows


# -- the layouts ------------------------------------------------------------------------------
def is_parquet_file(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == PARQUET_MAGIC


def is_save_to_disk_folder(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _split_of(file: Path) -> str:
    """The Hub names files ``<split>-00000-of-00001-<hash>.parquet``; a folder may be the split."""
    stem = file.name.split("-", 1)[0].split(".", 1)[0]
    return stem


def hub_files(path: str | Path, split: str | None = None) -> list[Path]:
    """The data files of a Hub layout in a stable order (splits by name, shards in order)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if is_save_to_disk_folder(path):
        dict_file = path / "dataset_dict.json"
        if dict_file.is_file():
            splits = _metadata(dict_file).get("splits")
            if not isinstance(splits, list):
                raise BadInput(f"{dict_file}: no list of splits")
            if split is not None:
                if split not in splits:
                    raise BadRecipe(f"{path}: no split {split!r} (it has {', '.join(splits)})")
                splits = [split]
            return [f for s in splits for f in _arrow_files(path / s)]
        return _arrow_files(path)
    files = sorted(path.rglob("*.parquet"))
    if split is not None:
        chosen = [f for f in files if _split_of(f) == split or f.parent.name == split]
        if not chosen:
            found = sorted({_split_of(f) for f in files})
            raise BadRecipe(f"{path}: no parquet files of split {split!r} (found {found})")
        files = chosen
    return files


def _metadata(file: Path) -> dict[str, Any]:
    """A save_to_disk metadata file as an object; a damaged one is bad input that names it."""
    try:
        data = json.loads(file.read_text())
    except ValueError as exc:  # not JSON, or not text
        raise BadInput(f"{file}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BadInput(f"{file}: a JSON object is required, got {type(data).__name__}")
    return data


def _arrow_files(folder: Path) -> list[Path]:
    state = folder / "state.json"
    if state.is_file():
        names = [d["filename"] for d in _metadata(state).get("_data_files", [])]
        if names:
            return [folder / n for n in names]
    return sorted(folder.glob("*.arrow"))


def iter_hub_rows(file: Path) -> Iterator[dict[str, Any]]:
    """Rows of one parquet or arrow file as dicts, a record batch at a time."""
    if file.suffix == ".arrow":
        # save_to_disk writes the arrow IPC stream format; memory-mapped, so batches are views.
        with pa.memory_map(str(file)) as source:
            reader = pa.ipc.open_stream(source)
            for batch in reader:
                yield from batch.to_pylist()
        return
    parquet = pq.ParquetFile(file)
    for batch in parquet.iter_batches(batch_size=BATCH_ROWS):
        yield from batch.to_pylist()


def hub_columns(file: Path) -> list[str]:
    """The column names of one parquet or arrow file."""
    if file.suffix == ".arrow":
        with pa.memory_map(str(file)) as source:
            return list(pa.ipc.open_stream(source).schema.names)
    return list(pq.read_schema(file).names)


def hub_chat_format(file: Path) -> str | None:
    """The chat format of a Hub chat dataset's file, by its columns: ``messages`` of
    ``{role, content}`` (ultrachat_200k, TRL's datasets) or ShareGPT's ``conversations``;
    None for Open-Assistant's message rows (or a file whose schema cannot be read)."""
    try:
        names = hub_columns(file)
    except (OSError, pa.ArrowException):
        return None  # the reader reports the damaged file when it gets there
    if "message_id" in names:
        return None
    if "messages" in names:
        return "trl-messages"
    if "conversations" in names:
        return "sharegpt"
    return None


def hub_row_count(files: list[Path]) -> int:
    total = 0
    for file in files:
        if file.suffix == ".parquet":
            # A damaged file counts nothing here; the reader reports it when it gets there.
            with contextlib.suppress(OSError, pa.ArrowException):
                total += pq.ParquetFile(file).metadata.num_rows
    return total
