"""Preference data as people hold it: TRL's preference format, read into our pair records.

TRL's DPO datasets come in four shapes, all read here (JSON lines, gzipped or not, or the Hub's
parquet: one file, a ``data/`` folder, or a ``save_to_disk`` folder), one record a line or row:

    conversational, explicit prompt  {"prompt": [{role, content}...], "chosen": [{assistant}], "rejected": [...]}
    conversational, implicit prompt  {"chosen": [user, assistant], "rejected": [user, assistant]}
    plain, explicit prompt           {"prompt": "The sky is", "chosen": " blue.", "rejected": " green."}
    plain, implicit prompt           {"chosen": "The sky is blue.", "rejected": "The sky is green."}

Our own pair records are the first shape. An implicit prompt is the longest shared start of
``chosen`` and ``rejected``, as TRL's ``extract_prompt`` takes it; a ``prompt`` string beside
conversational completions (HuggingFaceH4/ultrafeedback_binarized: the user's question, also the
first message of ``chosen``) is ignored the same way TRL ignores it. Our students are chat models,
so a plain prompt becomes one user turn and a plain completion one assistant reply.

Each record becomes ``{"prompt": [messages], "chosen": [assistant], "rejected": [assistant],
...the record's other fields}``, so the trainers fit, truncate and count it exactly as a pair
exported from trees. A record that cannot be one is rejected with its file and line (or row)
and counted: read = kept + rejected.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from convdistill.conversation_trees.hub import hub_columns, hub_files, is_parquet_file, iter_hub_rows
from convdistill.conversation_trees.ingest_report import IngestReport, Reject, RejectSink
from convdistill.conversation_trees.readers import open_export, parse_line
from convdistill.errors import BadInput

ROLES = ("system", "user", "assistant")
Message = dict[str, str]


class PreferenceError(BadInput):
    """A record that is not a usable preference pair; the message names the field."""


def is_tabular(path: Path) -> bool:
    """A parquet file or a folder (the Hub's layouts), as opposed to JSON lines."""
    return path.is_dir() or is_parquet_file(path)


def holds_preferences(path: Path) -> bool:
    """Whether a parquet file or folder has the preference columns ``chosen`` and ``rejected``."""
    files = hub_files(path)
    names = hub_columns(files[0]) if files else []
    return "chosen" in names and "rejected" in names


def _shared_start(chosen: Sequence[Any], rejected: Sequence[Any]) -> int:
    """How long the implicit prompt is: the longest shared start; for text, a space before the
    first difference goes with the completions (TRL's rule)."""
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    if isinstance(chosen, str) and 0 < n < len(chosen) and chosen[n - 1] == " ":
        n -= 1
    return n


def _messages(value: Any, name: str, plain_role: str) -> list[Message]:
    if isinstance(value, str):
        return [{"role": plain_role, "content": value}]
    if not isinstance(value, list):
        raise PreferenceError(f"{name}: a string or a list of {{role, content}} messages is required, "
                              f"got {type(value).__name__}")
    out = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise PreferenceError(f"{name}[{i}]: a {{role, content}} object is required")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise PreferenceError(f"{name}[{i}].role: one of {', '.join(ROLES)} is required, got {role!r}")
        if not isinstance(content, str):
            raise PreferenceError(f"{name}[{i}].content: a string is required, got {type(content).__name__}")
        out.append({"role": role, "content": content})
    return out


def preference_pair(record: dict[str, Any]) -> dict[str, Any]:
    """One TRL preference record as our pair record; raises PreferenceError naming the field."""
    for name in ("chosen", "rejected"):
        if name not in record or record[name] is None:
            raise PreferenceError(f"{name}: missing")
    chosen, rejected, prompt = record["chosen"], record["rejected"], record.get("prompt")
    if chosen == rejected:
        raise PreferenceError("chosen, rejected: the same (nothing to prefer)")
    conversational = isinstance(chosen, list)
    if conversational != isinstance(rejected, list):
        raise PreferenceError("chosen, rejected: both conversations or both strings are required")
    if prompt is None or (conversational and isinstance(prompt, str)):
        start = _shared_start(chosen, rejected)
        prompt, chosen, rejected = chosen[:start], chosen[start:], rejected[start:]
    pair = {
        "prompt": _messages(prompt, "prompt", "user"),
        "chosen": _messages(chosen, "chosen", "assistant"),
        "rejected": _messages(rejected, "rejected", "assistant"),
    }
    if not pair["prompt"] or not any(m["content"].strip() for m in pair["prompt"]):
        raise PreferenceError("prompt: empty (chosen and rejected share no start to use as the prompt)")
    if pair["prompt"][-1]["role"] != "user":
        raise PreferenceError(f"prompt: must end on a user message, ends on {pair['prompt'][-1]['role']}")
    for name in ("chosen", "rejected"):
        side = pair[name]
        if len(side) != 1 or side[0]["role"] != "assistant":
            raise PreferenceError(f"{name}: one assistant reply after the prompt is required, "
                                  f"got {[m['role'] for m in side]}")
        if not side[0]["content"].strip():
            raise PreferenceError(f"{name}: empty reply")
    return {**{k: v for k, v in record.items() if k not in pair}, **pair}


def _rows(path: Path) -> Iterator[tuple[Path, int, Any, str | None, str | None]]:
    """(file, line or row, record, reject kind, reason) for every record of an input; the kind
    and reason are None when the record could be parsed."""
    if is_tabular(path):
        for file in hub_files(path):
            for number, row in enumerate(iter_hub_rows(file), start=1):
                yield file, number, row, None, None
        return
    stream, raw = open_export(path)
    number = 0
    try:
        for number, line in enumerate(stream, start=1):
            if line.strip():
                value, kind, reason = parse_line(line)
                yield path, number, value, kind, reason
    except (OSError, EOFError, zlib.error) as exc:  # a truncated gzip stream
        yield path, number + 1, None, "unreadable", f"file cannot be read further: {exc}"
    finally:
        stream.close()
        raw.close()


def read_preferences(
    path: str | Path, *, limit: int | None = None, on_reject: RejectSink | None = None
) -> tuple[list[dict[str, Any]], IngestReport]:
    """The pair records of a preference file (up to `limit` kept), and what was read and rejected."""
    path = Path(path)
    report = IngestReport(file=str(path), format="preferences")
    records: list[dict[str, Any]] = []
    for file, number, value, kind, reason in _rows(path):
        report.records_read += 1
        try:
            if not isinstance(value, dict):
                raise PreferenceError(reason or f"a JSON object is required, got {type(value).__name__}")
            records.append(preference_pair(value))
        except PreferenceError as exc:
            report.records_rejected += 1
            report.reasons[kind or "schema"] += 1
            if on_reject is not None:
                on_reject(Reject(str(file), number, kind or "schema", str(exc)))
            continue
        report.records_kept += 1
        if limit is not None and len(records) >= limit:
            break
    return records, report
