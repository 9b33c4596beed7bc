"""``convdistill trees convert``: any input we read -> an Open-Assistant export.

The output is the ordinary export format (nested trees by default, flat messages on request),
so every tool that reads Open-Assistant exports, ours included (``extend``, ``demo --trees``),
reads converted chat histories and Hub files as they are. Chat provenance (``source``,
``conversation_id``, ``title``, ``system``, ``shown``, ``interrupted``) rides along as extra
fields, which the schema keeps; the flat format carries only the message fields and the tree's
id and state, so it drops the tree-level ones (say ``--format trees`` to keep them).
"""

from __future__ import annotations

from pathlib import Path

from convdistill.conversation_trees.exports import ReadOptions
from convdistill.conversation_trees.ingest_report import IngestReport
from convdistill.conversation_trees.writers import ExportFormat, write_trees
from convdistill.files import write_atomically


def convert_trees(
    input_path: str | Path,
    out: str | Path,
    *,
    fmt: ExportFormat = "trees",
    read: ReadOptions | None = None,
) -> tuple[IngestReport, int]:
    """Read ``input_path`` (any supported format), write ``out``; returns (report, lines written).

    The output is written next to its final name and moved into place at the end, so a failed
    read under ``on_error="fail"`` leaves no half-written export behind.
    """
    reader = (read or ReadOptions()).reader(input_path)
    with write_atomically(out) as partial:
        lines = write_trees(partial, reader, fmt)
    return reader.report, lines
