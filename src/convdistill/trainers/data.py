"""Training records: path records (SFT) and pair records (DPO), read from JSONL files or made
from an Open-Assistant tree export on the fly; and which assistant turns carry loss.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import orjson

from convdistill.conversation_trees.ingest_report import IngestReport, Reject
from convdistill.errors import BadInput, Unavailable
from convdistill.files import open_binary, write_atomically

logger = logging.getLogger(__name__)
Kind = Literal["paths", "pairs"]
Message = dict[str, str]


def _first_record(path: Path) -> dict[str, Any] | None:
    with open_binary(path) as stream:
        for line in stream:
            if line.strip():
                try:
                    value = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise BadInput(f"{path}: first record is not JSON ({exc})") from None
                return value if isinstance(value, dict) else None
    return None


def file_kind(path: Path) -> str:
    """'paths', 'pairs' or 'trees' (any input the tree reader reads) from the first record, or
    from the columns of a parquet file or folder."""
    from convdistill.conversation_trees.preferences import holds_preferences, is_tabular

    if is_tabular(path):
        return "pairs" if holds_preferences(path) else "trees"
    first = _first_record(path)
    if first is None:
        raise BadInput(f"{path}: empty file, nothing to train on")
    # Preference records first: ultrafeedback_binarized carries `messages` beside chosen/rejected.
    if "chosen" in first and "rejected" in first:
        return "pairs"
    if "messages" in first:
        return "paths"
    if "message_tree_id" in first or "message_id" in first:
        return "trees"
    raise BadInput(
        f"{path}: neither path records (messages), pair records (prompt/chosen/rejected) nor an "
        "Open-Assistant export"
    )


def read_jsonl(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    records = []
    with open_binary(path) as stream:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                records.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                raise BadInput(f"{path}:{number}: not JSON ({exc})") from None
            if limit is not None and len(records) >= limit:
                break
    return records


def load_records(
    path: str | Path,
    kind: Kind,
    work_dir: Path,
    path_strategy: str = "all",
    limit: int | None = None,
) -> tuple[list[dict[str, Any]], Path]:
    """The records to train on and the file they came from. A tree export is first exported
    (paths or pairs, as `convdistill paths|pairs export` would) into `work_dir`, so the exact
    training data stays on disk beside the checkpoint."""
    if kind == "pairs":
        records, report = load_pairs(path, work_dir, limit)
        return records, Path(report.file)
    from convdistill.conversation_trees import export_paths

    source, found = _trees_exported(
        path, work_dir, "paths",
        lambda trees, out: export_paths(trees, out, strategy=path_strategy))  # type: ignore[arg-type]
    if found != "paths":
        raise BadInput(f"{source}: holds {found} records, but this trainer needs path records (messages)")
    records = read_jsonl(source, limit)
    if not records:
        raise BadInput(f"{source}: no records")
    return records, source


def load_pairs(path: str | Path, work_dir: Path, limit: int | None = None
               ) -> tuple[list[dict[str, Any]], IngestReport]:
    """Pair records to train DPO on, and what reading them kept and rejected: our own pair
    records, a preference file in TRL's format (JSONL or the Hub's parquet), or a tree export,
    whose pairs are first exported into `work_dir`."""
    from convdistill.conversation_trees import export_pairs
    from convdistill.conversation_trees.preferences import read_preferences

    source, found = _trees_exported(path, work_dir, "pairs", export_pairs)
    if found != "pairs":
        raise BadInput(f"{source}: holds {found} records, but this trainer needs pair records "
                       "(prompt/chosen/rejected)")
    records, report = read_preferences(source, limit=limit, on_reject=_log_reject)
    if not records:
        raise BadInput(f"{source}: no usable pair records ({report.summary()})")
    return records, report


def _trees_exported(path: str | Path, work_dir: Path, kind: Kind, export: Callable[[Path, Path], Any]
                    ) -> tuple[Path, str]:
    """The training file and the kind of records it holds. A tree export is first exported by
    `export` into `work_dir`/`kind`.jsonl (beside the checkpoint, so the exact training data
    stays on disk) and that file is returned. The processes of a distributed run all export the same file; each
    writes its own partial (named by process id) and renames it into place, so none reads
    another's half."""
    source = Path(path)
    if not source.exists():
        raise Unavailable(f"train data {source}: no such file")
    found = file_kind(source)
    if found != "trees":
        return source, found
    target = work_dir / f"{kind}.jsonl"
    with write_atomically(target) as partial:
        export(source, partial)
    return target, kind


def _log_reject(reject: Reject) -> None:
    logger.warning("rejected %s", reject.describe())


def train_flags(record: dict[str, Any], train_on: str) -> list[bool]:
    """Which messages carry loss: a record's own `train` list if present, else the assistant
    turns chosen by `train_on` (all / last / teacher = synthetic / human = not synthetic)."""
    messages: Sequence[Message] = record["messages"]
    own = record.get("train")
    if own is not None:
        if len(own) != len(messages):
            raise BadInput(
                f"record {record.get('tree_id', '?')}: `train` has {len(own)} flags for "
                f"{len(messages)} messages"
            )
        return [bool(flag) and m["role"] == "assistant" for flag, m in zip(own, messages, strict=True)]
    synthetic = record.get("synthetic") or [False] * len(messages)
    flags = []
    for message, is_synthetic in zip(messages, synthetic, strict=False):
        assistant = message["role"] == "assistant"
        if train_on == "teacher":
            flags.append(assistant and bool(is_synthetic))
        elif train_on == "human":
            flags.append(assistant and not is_synthetic)
        else:
            flags.append(assistant)
    flags += [False] * (len(messages) - len(flags))
    if train_on == "last":
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        flags = [i == last for i in range(len(messages))]
    return flags
