"""Compare a run with a baseline run: which cases got worse by more than the tolerance.

A case regresses when its score (the minimum over its turns) drops by more than `tolerance`,
or when it is missing from the new run. Each regression lists the turns whose score dropped,
with both replies side by side, so a reviewer sees what changed without opening JSON.

Beside the case-by-case view, the whole run's difference from the baseline is bootstrapped over
the cases both scored (paired): whether the new model is better, worse, or within the noise.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree

from convdistill.errors import BadRecipe
from convdistill.eval.scoring import paired_difference

_EPS = 1e-9  # a drop of exactly the tolerance is within it, whatever float rounding says


@dataclass
class TurnDrop:
    depth: int
    user: str
    baseline_score: float | None
    score: float | None
    baseline_reply: str
    reply: str
    failed_checks: list[str]


@dataclass
class CaseDiff:
    id: str
    tags: list[str]
    baseline_score: float | None
    score: float | None
    missing: bool = False
    turns: list[TurnDrop] = field(default_factory=list)

    @property
    def drop(self) -> float:
        return (self.baseline_score or 0.0) - (self.score or 0.0)


@dataclass
class Comparison:
    tolerance: float
    model: str
    baseline_model: str
    regressions: list[CaseDiff]
    improvements: list[CaseDiff]
    unchanged: list[CaseDiff]
    new_cases: list[str]
    paired: dict[str, Any] | None = None  # scoring.paired_difference of the two runs

    @property
    def failed(self) -> bool:
        return bool(self.regressions)

    def summary(self) -> str:
        return (
            f"{self.model} vs baseline {self.baseline_model}: {len(self.regressions)} regressed, "
            f"{len(self.improvements)} improved, {len(self.unchanged)} within tolerance {self.tolerance:g}"
            + (f", {len(self.new_cases)} new" if self.new_cases else "")
            + (f"\n{noise_line(self.paired)}" if self.paired else "")
        )


def _signed(value: float) -> str:
    return f"{value:+.3f}"


def noise_line(paired: dict[str, Any]) -> str:
    """One line: the paired differences with their 95% intervals, and whether they are noise."""
    low, high = paired["score_difference_ci"]
    plow, phigh = paired["cases_passed_difference_ci"]
    return (f"score {_signed(paired['score_difference'])} (95% interval {_signed(low)} to {_signed(high)}), "
            f"cases passed {paired['cases_passed_difference']:+d} ({plow:+.0f} to {phigh:+.0f}), paired over "
            f"{paired['cases']} cases: {paired['verdict']}")


def _score(value: Any) -> float:
    return float(value) if value is not None else 0.0


def compare_results(results: dict[str, Any], baseline: dict[str, Any], tolerance: float = 0.0) -> Comparison:
    if tolerance < 0:
        raise BadRecipe(f"tolerance must be >= 0, got {tolerance}")
    new = {c["id"]: c for c in results["cases"]}
    regressions, improvements, unchanged = [], [], []
    for base in baseline["cases"]:
        case = new.get(base["id"])
        if case is None:
            regressions.append(CaseDiff(base["id"], base["tags"], base["score"], None, missing=True))
            continue
        diff = CaseDiff(base["id"], base["tags"], base["score"], case["score"])
        if diff.drop > tolerance + _EPS:
            for old_turn, turn in zip(base["turns"], case["turns"], strict=False):
                if _score(old_turn["score"]) - _score(turn["score"]) > tolerance + _EPS:
                    failed = [f"{c['name']}: {c['detail']}" for c in turn["checks"] if c["passed"] is False]
                    diff.turns.append(
                        TurnDrop(turn["depth"], turn["user"], old_turn["score"], turn["score"],
                                 old_turn["reply"], turn["reply"], failed)
                    )
            regressions.append(diff)
        elif -diff.drop > tolerance + _EPS:
            improvements.append(diff)
        else:
            unchanged.append(diff)
    known = {c["id"] for c in baseline["cases"]}
    return Comparison(
        tolerance,
        str(results.get("model")),
        str(baseline.get("model")),
        regressions,
        improvements,
        unchanged,
        [c["id"] for c in results["cases"] if c["id"] not in known],
        paired_difference(results, baseline),
    )


def _fmt(score: float | None) -> str:
    return "n/a" if score is None else f"{score:.3f}"


def side_by_side(left: str, right: str, width: int = 56) -> list[str]:
    """Two texts in two columns, wrapped: baseline on the left, the new model on the right."""
    a = textwrap.wrap(left or "(empty)", width) or [""]
    b = textwrap.wrap(right or "(empty)", width) or [""]
    rows = max(len(a), len(b))
    a += [""] * (rows - len(a))
    b += [""] * (rows - len(b))
    return [f"    {x:<{width}} | {y}" for x, y in zip(a, b, strict=True)]


def format_regressions(comparison: Comparison, width: int = 56) -> str:
    lines: list[str] = []
    for diff in comparison.regressions:
        if diff.missing:
            lines.append(f"REGRESSED {diff.id} [{', '.join(diff.tags)}]: missing from the new results")
            continue
        lines.append(
            f"REGRESSED {diff.id} [{', '.join(diff.tags)}]: {_fmt(diff.baseline_score)} -> {_fmt(diff.score)}"
            f" (drop {diff.drop:.3f} > {comparison.tolerance:g})"
        )
        for turn in diff.turns:
            lines.append(f"  turn {turn.depth}: {_fmt(turn.baseline_score)} -> {_fmt(turn.score)}  user: {turn.user!r}")
            lines.extend(f"    failed {failure}" for failure in turn.failed_checks)
            lines.append(f"    {'baseline (' + comparison.baseline_model + ')':<{width}} | {comparison.model}")
            lines.extend(side_by_side(turn.baseline_reply, turn.reply, width))
    lines.append(comparison.summary())
    return "\n".join(lines)


def junit_xml(comparison: Comparison, suite_name: str = "convdistill-eval") -> str:
    """One testcase per baseline case; a regression is a <failure> with the side-by-side text."""
    cases = comparison.regressions + comparison.improvements + comparison.unchanged
    root = ElementTree.Element(
        "testsuite", name=suite_name, tests=str(len(cases)), failures=str(len(comparison.regressions)), errors="0"
    )
    for diff in sorted(cases, key=lambda d: d.id):
        item = ElementTree.SubElement(root, "testcase", classname=suite_name, name=diff.id)
        if diff in comparison.regressions:
            single = Comparison(comparison.tolerance, comparison.model, comparison.baseline_model, [diff], [], [], [])
            text = format_regressions(single).rsplit("\n", 1)[0]
            failure = ElementTree.SubElement(
                item, "failure", message=f"score {_fmt(diff.baseline_score)} -> {_fmt(diff.score)}"
            )
            failure.text = text
    ElementTree.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ElementTree.tostring(root, encoding="unicode") + "\n"
