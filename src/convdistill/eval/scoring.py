"""Scores above the turn: a case scores the minimum over its turns (one bad turn is a bad
conversation), a tag the mean of its cases, a depth the mean of the turns at that depth."""

from __future__ import annotations

from collections import defaultdict
from typing import Any


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def case_score(turns: list[dict[str, Any]]) -> tuple[float | None, bool]:
    scores = [t["score"] for t in turns if t["score"] is not None]
    return (min(scores) if scores else None), all(t["passed"] for t in turns)


def summarize(cases: list[dict[str, Any]]) -> dict[str, Any]:
    by_tag: dict[str, list[float]] = defaultdict(list)
    by_depth: dict[int, list[float]] = defaultdict(list)
    for case in cases:
        if case["score"] is not None:
            for tag in case["tags"]:
                by_tag[tag].append(case["score"])
        for turn in case["turns"]:
            if turn["score"] is not None:
                by_depth[turn["depth"]].append(turn["score"])
    scored = [c["score"] for c in cases if c["score"] is not None]
    nlls = [t["nll"] for c in cases for t in c["turns"] if t.get("nll") is not None]
    return {
        "score": _mean(scored),
        "cases": len(cases),
        "cases_passed": sum(1 for c in cases if c["passed"]),
        "turns": sum(len(c["turns"]) for c in cases),
        "turns_passed": sum(1 for c in cases for t in c["turns"] if t["passed"]),
        "by_tag": {tag: _mean(v) for tag, v in sorted(by_tag.items())},
        "by_depth": {str(d): _mean(v) for d, v in sorted(by_depth.items())},
        "mean_reference_nll": _mean(nlls),
    }
