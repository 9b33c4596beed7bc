"""Replace personal data in message texts before anything is written (``--redact``).

A person's own chat history holds email addresses, phone numbers and links to private pages.
Each kind is a regular expression whose matches become a placeholder (``[EMAIL]``, ``[PHONE]``,
``[URL]``); a file of extra patterns (one regular expression a line, ``#`` comments) replaces
its matches with ``[REDACTED]``. Texts of messages, tree titles and system prompts are redacted;
ids are not (they are opaque). The counts go into the read report.

Patterns are deliberately simple: they catch the common forms (``name@host.tld``,
``+49 30 1234567``, ``(555) 123-4567``, ``https://...``, ``www....``) and will miss some
others; a phone needs 7 to 15 digits, and ISO dates (2023-04-12) are never taken for phones.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx

from convdistill.errors import BadInput, BadRecipe

REDACT_KINDS = ("emails", "phones", "urls")
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"'`]+[^\s<>\"'`.,;:!?)\]]")
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_PHONE = re.compile(r"(?<![\w+])\+?(?:\(\d{1,4}\)[ .-]?)?\d[\d .-]{5,}\d(?!\w)")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
PLACEHOLDER = {"urls": "[URL]", "emails": "[EMAIL]", "phones": "[PHONE]"}


def _phone(match: re.Match[str]) -> bool:
    text = match.group(0)
    digits = sum(c.isdigit() for c in text)
    return 7 <= digits <= 15 and not _DATE.search(text)


@dataclass
class Redactor:
    kinds: tuple[str, ...] = REDACT_KINDS
    patterns: list[re.Pattern[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        unknown = [k for k in self.kinds if k not in REDACT_KINDS]
        if unknown:
            raise BadRecipe(f"unknown redaction {', '.join(unknown)}; choose from {', '.join(REDACT_KINDS)}")

    @classmethod
    def from_options(cls, kinds: tuple[str, ...], patterns_file: Path | None = None) -> Redactor:
        patterns = []
        if patterns_file is not None:
            for number, line in enumerate(patterns_file.read_text().splitlines(), start=1):
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                try:
                    patterns.append(re.compile(line))
                except re.error as exc:
                    raise BadInput(f"{patterns_file}:{number}: not a regular expression: {exc}") from None
        return cls(kinds, patterns)

    def text(self, text: str, counts: Counter) -> str:
        # URLs first: they may hold an address or digits that look like a phone.
        for kind in ("urls", "emails", "phones"):
            if kind not in self.kinds:
                continue
            if kind == "phones":
                text = _PHONE.sub(lambda m: self._count(m, counts), text)
            else:
                pattern = _URL if kind == "urls" else _EMAIL
                text, n = pattern.subn(PLACEHOLDER[kind], text)
                counts[kind] += n
        for pattern in self.patterns:
            text, n = pattern.subn("[REDACTED]", text)
            counts["patterns"] += n
        return text

    @staticmethod
    def _count(match: re.Match[str], counts: Counter) -> str:
        if not _phone(match):
            return match.group(0)
        counts["phones"] += 1
        return PLACEHOLDER["phones"]

    def __call__(self, graph: nx.DiGraph) -> Counter:
        """Redact one tree in place; returns replacements by kind (zero counts dropped)."""
        counts: Counter = Counter()
        for _, attrs in graph.nodes(data=True):
            if isinstance(attrs.get("text"), str):
                attrs["text"] = self.text(attrs["text"], counts)
        for key in ("title", "system"):
            if isinstance(graph.graph.get(key), str):
                graph.graph[key] = self.text(graph.graph[key], counts)
        return +counts
