"""What a read kept and rejected: every record is counted once, and the counts add up."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

from convdistill.conversation_trees.chat_exports import CHAT_FORMATS
from convdistill.errors import BadInput

OnError = Literal["skip", "fail"]


@dataclass(frozen=True)
class Reject:
    """One record (a line of the file) that was not kept, and why."""

    file: str
    line: int
    kind: str  # a short category for the summary: malformed_json, schema, orphan, cycle, ...
    reason: str
    tree_id: str | None = None
    message_id: str | None = None

    def describe(self) -> str:
        where = f"{self.file}:{self.line}"
        ids = ", ".join(
            f"{k} {v}" for k, v in (("tree", self.tree_id), ("message", self.message_id)) if v
        )
        return f"{where}: {self.reason}" + (f" ({ids})" if ids else "")

    def to_dict(self) -> dict:
        return asdict(self)


class InputError(BadInput):
    """Raised with ``on_error='fail'`` at the first bad record; the message names file and line."""

    def __init__(self, reject: Reject):
        super().__init__(reject.describe())
        self.reject = reject


@dataclass
class IngestReport:
    """Counts of one read. ``records`` are lines: trees in a nested file, messages in a flat one."""

    file: str
    format: str = "unknown"
    records_read: int = 0
    records_kept: int = 0
    records_rejected: int = 0
    trees_kept: int = 0
    messages_kept: int = 0
    reasons: Counter = field(default_factory=Counter)  # reject kind -> records
    # Chat exports: parts of kept conversations that the schema cannot carry (tool calls, images,
    # hidden system messages, ...), by reason; never dropped without a count.
    skipped: Counter = field(default_factory=Counter)
    redacted: Counter = field(default_factory=Counter)  # --redact: kind -> replacements

    @property
    def balanced(self) -> bool:
        return self.records_read == self.records_kept + self.records_rejected

    def summary(self) -> str:
        unit = {
            "trees": "tree lines",
            "messages": "message lines",
            "message-trees": "tree lines",  # Open-Assistant message lines with nested replies
            "preferences": "preference records",  # TRL's prompt/chosen/rejected (preferences.py)
            "hub-parquet": "message rows",
            "hub-datasets": "message rows",
            **{name: "conversations" for name in CHAT_FORMATS},
        }.get(self.format, "lines")
        text = (
            f"{self.file}: read {self.records_read} {unit}, kept {self.records_kept}, "
            f"rejected {self.records_rejected}"
        )
        if self.format != "preferences":  # pair records are not trees
            text += f" ({self.trees_kept} trees, {self.messages_kept} messages kept)"
        for kind, n in self.reasons.most_common():
            text += f"\n  rejected {n} x {kind}"
        for reason, n in self.skipped.most_common():
            text += f"\n  skipped {n} x {reason}"
        if self.redacted:
            parts = ", ".join(f"{n} {kind}" for kind, n in sorted(self.redacted.items()))
            text += f"\n  redacted {parts}"
        return text


RejectSink = Callable[[Reject], None]
