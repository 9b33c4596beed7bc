"""Scores above the turn, and how sure they are.

A case scores the minimum over its scored turns (one bad turn is a bad conversation) and passes
when every turn passed, its unscored setup turns' gates included (a setup turn that loops is not
a conversation that went right, but what it says earns or costs no score). A case none of whose
turns ran a content check is *unscored*: reported, counted apart, and left out of the score and
of cases passed. A tag scores the mean of its cases, a depth
the mean of the scored turns at that depth.

The headline figures carry 95% intervals from a bootstrap over cases (the cases are the sample
a suite draws from the abilities it tests); `paired_difference` bootstraps the per-case
differences of two runs, which is what says whether a change is larger than the noise.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # fixed: the same results give the same interval
LEVEL = 0.95


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def case_score(turns: list[dict[str, Any]]) -> tuple[float | None, bool]:
    """(score, passed) of a case from its turn records; score None when no turn was scored."""
    scores = [t["score"] for t in turns if t["score"] is not None]
    return (min(scores) if scores else None), all(t["passed"] for t in turns)


def bootstrap_interval(
    values: Sequence[float],
    statistic: Callable[[np.ndarray], np.ndarray] = lambda a: a.mean(axis=-1),
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float] | None:
    """The LEVEL percentile interval of `statistic` over resamples of `values` (with
    replacement, same size); None for no values."""
    if not values:
        return None
    data = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    draws = statistic(data[rng.integers(0, len(data), size=(resamples, len(data)))])
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def _sum(a: np.ndarray) -> np.ndarray:
    return a.sum(axis=-1)


def _failed_a_gate(turn: dict[str, Any]) -> bool:
    return any(c.get("gate") and c["passed"] is False for c in turn.get("checks", ()))


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
    scored = [c for c in cases if c["score"] is not None]
    scores = [c["score"] for c in scored]
    passed = [1.0 if c["passed"] else 0.0 for c in scored]
    turns = [t for c in cases for t in c["turns"]]
    scored_turns = [t for t in turns if t["score"] is not None]
    nlls = [t["nll"] for t in turns if t.get("nll") is not None]
    return {
        "score": _mean(scores),
        "score_ci": bootstrap_interval(scores),
        "cases": len(scored),
        "cases_passed": int(sum(passed)),
        "cases_passed_ci": bootstrap_interval(passed, _sum),
        "cases_unscored": len(cases) - len(scored),
        "turns": len(scored_turns),
        "turns_passed": sum(1 for t in scored_turns if t["passed"]),
        "turns_unscored": len(turns) - len(scored_turns),
        "turns_gated": sum(1 for t in turns if _failed_a_gate(t)),
        "by_tag": {tag: _mean(v) for tag, v in sorted(by_tag.items())},
        "by_depth": {str(d): _mean(v) for d, v in sorted(by_depth.items())},
        "mean_reference_nll": _mean(nlls),
    }


def paired_difference(
    results: dict[str, Any], baseline: dict[str, Any]
) -> dict[str, Any] | None:
    """The new run minus the baseline over the cases scored in both: the mean case-score
    difference and the difference in cases passed, each with its paired bootstrap interval, and
    a verdict: "better" / "worse" when the score interval excludes 0, else "within noise".
    None when no case is scored in both."""
    base = {c["id"]: c for c in baseline["cases"] if c["score"] is not None}
    shared = [(c, base[c["id"]]) for c in results["cases"] if c["score"] is not None and c["id"] in base]
    if not shared:
        return None
    score_diffs = [new["score"] - old["score"] for new, old in shared]
    passed_diffs = [float(bool(new["passed"])) - float(bool(old["passed"])) for new, old in shared]
    interval = bootstrap_interval(score_diffs)
    assert interval is not None
    verdict = "better" if interval[0] > 0 else "worse" if interval[1] < 0 else "within noise"
    return {
        "cases": len(shared),
        "score_difference": sum(score_diffs) / len(shared),
        "score_difference_ci": interval,
        "cases_passed_difference": int(sum(passed_diffs)),
        "cases_passed_difference_ci": bootstrap_interval(passed_diffs, _sum),
        "verdict": verdict,
    }
