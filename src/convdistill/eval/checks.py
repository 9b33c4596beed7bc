"""Checks of one reply, each giving a score in 0..1 and a pass/fail with a readable reason.

Two kinds of check, because a reply that says nothing must not earn anything:
- gates (`no_loops`, `max_words`, `not_contains`, `format_regex`, and the run-level `same_reply`) check the
  form of a reply. Failing one fails the turn and zeroes its score; passing them earns nothing.
- content checks (`contains`, `regex`, `recall_of`, `rouge_l`, `chrf`, `judge`, `nll`) check
  what the reply says. A turn's score is the mean of its content checks' scores. A turn with no
  content check that ran (a setup turn, or a judged turn without a judge) is reported, not
  scored: a constant reply under a word limit used to pass such turns.
Deterministic content checks score the share of items found; similarity, judge and NLL checks
score continuously below their threshold, so a small slip costs a little and a collapse a lot:
that is what lets `compare --tolerance` tell noise from a regression. Similarity and judge
scores reach 0 at a floor (half the similarity threshold; the judge's rating of 1), not at 0:
an unrelated reply shares a few words with any reference and used to earn a fifth of a turn.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from convdistill.eval.similarity import chrf, rouge_l
from convdistill.eval.suite import Checks, Needle


@dataclass(frozen=True)
class CheckResult:
    name: str
    score: float | None  # None: skipped (no judge / no NLL for this backend)
    passed: bool | None
    detail: str
    value: float | None = None  # the measured number (similarity, rating, NLL), when there is one

    @property
    def gate(self) -> bool:
        return self.name in GATE_CHECKS

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "gate": self.gate}


JUDGE_FLOOR = 1.0  # the lowest rating a judge gives: it earns nothing

GATE_CHECKS = ("no_loops", "max_words", "not_contains", "format_regex", "same_reply")
CONTENT_CHECKS = ("contains", "regex", "recall_of", "rouge_l", "chrf", "judge", "nll")


def _fold(text: str, case_sensitive: bool) -> str:
    return text if case_sensitive else text.casefold()


def _found(needle: Needle, reply: str, case_sensitive: bool) -> bool:
    options = (needle,) if isinstance(needle, str) else needle
    return any(_fold(option, case_sensitive) in reply for option in options)


def _show(needle: Needle) -> str:
    return repr(needle) if isinstance(needle, str) else " or ".join(map(repr, needle))


def _share(name: str, needles: tuple[Needle, ...], reply: str, case_sensitive: bool) -> CheckResult:
    folded = _fold(reply, case_sensitive)
    missing = [n for n in needles if not _found(n, folded, case_sensitive)]
    score = 1 - len(missing) / len(needles)
    detail = "all found" if not missing else "missing " + ", ".join(_show(n) for n in missing)
    return CheckResult(name, score, not missing, detail)


def _threshold(name: str, value: float, minimum: float, floor: float) -> CheckResult:
    """Passed at `minimum`; below it the score falls linearly to 0 at `floor`, the value a reply
    that says nothing of the kind still gets (unrelated text shares a few words with any
    reference; a judge's lowest rating is 1): such a reply must earn nothing."""
    passed = value >= minimum
    score = 1.0 if passed else max(0.0, (value - floor) / (minimum - floor)) if minimum > floor else 0.0
    return CheckResult(name, score, passed, f"{value:.3f} {'>=' if passed else '<'} {minimum:g}", value)


# A degenerate reply: a word n-gram of LOOP_NGRAM words occurring more than LOOP_REPEATS times,
# or a stretch of 1-10 characters repeated 8 times in a row (loops without spaces: "!!!!!!!!",
# "ababab..."), or nothing at all, or the user's own words given back.
LOOP_NGRAM = 3
LOOP_REPEATS = 3
_CHARACTER_LOOP = re.compile(r"(.{1,10}?)\1{7,}", re.DOTALL)
_WORD = re.compile(r"\w+")
ECHO_MIN_WORDS = 5  # shorter user turns ("Why?") may be repeated by a fine reply


def degenerate(reply: str, user: str | None = None) -> str | None:
    """Why `reply` is degenerate (empty, a loop, an echo of `user`), or None when it is not."""
    words = _WORD.findall(reply.casefold())
    if not words:
        return "empty reply"
    counts: dict[tuple[str, ...], int] = {}
    for i in range(len(words) - LOOP_NGRAM + 1):
        gram = tuple(words[i: i + LOOP_NGRAM])
        counts[gram] = counts.get(gram, 0) + 1
    gram, times = max(counts.items(), key=lambda kv: kv[1], default=((), 0))
    if times > LOOP_REPEATS:
        return f"repeats {' '.join(gram)!r} {times} times"
    loop = _CHARACTER_LOOP.search(reply)
    if loop:
        return f"repeats {loop.group(1)!r} {len(loop.group(0)) // len(loop.group(1))} times in a row"
    if user is not None:
        said = _WORD.findall(user.casefold())
        if words == said:
            return "repeats the user's message"
        if len(said) >= ECHO_MIN_WORDS and " ".join(said) in " ".join(words) and len(said) * 2 >= len(words):
            return "mostly the user's message given back"
    return None


def run_checks(
    checks: Checks,
    reply: str,
    reference: str | None = None,
    judge_rating: float | None = None,
    nll: float | None = None,
    user: str | None = None,
    same_reply_users: int = 1,
) -> list[CheckResult]:
    """`same_reply_users`: how many different user messages of the run got this same reply
    (`same_replies`); from SAME_REPLY_USERS on, the reply ignores its input and fails a gate."""
    results: list[CheckResult] = []
    if same_reply_users >= SAME_REPLY_USERS:
        results.append(CheckResult("same_reply", 0.0, False,
                                   f"the same reply to {same_reply_users} different user messages of the run"))
    sensitive = checks.case_sensitive
    if checks.no_loops:
        problem = degenerate(reply, user)
        results.append(CheckResult("no_loops", 0.0 if problem else 1.0, problem is None, problem or "a reply"))
    if checks.contains:
        results.append(_share("contains", checks.contains, reply, sensitive))
    if checks.not_contains:
        folded = _fold(reply, sensitive)
        present = [n for n in checks.not_contains if _fold(n, sensitive) in folded]
        detail = "none present" if not present else "present " + ", ".join(map(repr, present))
        results.append(CheckResult("not_contains", 0.0 if present else 1.0, not present, detail))
    for name in ("regex", "format_regex"):
        patterns: tuple[str, ...] = getattr(checks, name)
        if patterns:
            flags = 0 if sensitive else re.IGNORECASE
            missing = [p for p in patterns if not re.search(p, reply, flags)]
            score = 1 - len(missing) / len(patterns)
            detail = "all match" if not missing else "no match for " + ", ".join(map(repr, missing))
            results.append(CheckResult(name, score, not missing, detail))
    if checks.recall_of:
        results.append(_share("recall_of", checks.recall_of, reply, sensitive))
    if checks.max_words is not None:
        count = len(reply.split())
        passed = count <= checks.max_words
        # Over the limit: the score falls with the overshoot, never below 0.
        score = 1.0 if passed else max(0.0, checks.max_words / count)
        results.append(CheckResult("max_words", score, passed, f"{count} words, limit {checks.max_words}", count))
    if checks.rouge_l is not None and reference is not None:
        results.append(_threshold("rouge_l", rouge_l(reply, reference), checks.rouge_l, checks.rouge_l / 2))
    if checks.chrf is not None and reference is not None:
        results.append(_threshold("chrf", chrf(reply, reference), checks.chrf, checks.chrf / 2))
    if checks.judge is not None:
        if judge_rating is None:
            results.append(CheckResult("judge", None, None, "skipped: no judge given"))
        else:
            results.append(_threshold("judge", judge_rating, checks.judge, JUDGE_FLOOR))
    if checks.nll is not None:
        if nll is None:
            results.append(CheckResult("nll", None, None, "skipped: the backend gives no log-likelihoods"))
        else:
            passed = nll <= checks.nll
            score = 1.0 if passed else checks.nll / nll
            detail = f"{nll:.3f} {'<=' if passed else '>'} {checks.nll:g}"
            results.append(CheckResult("nll", score, passed, detail, nll))
    return results


def turn_score(results: Sequence[CheckResult]) -> tuple[float | None, bool]:
    """(score, passed) of a turn. The score is the mean of the content checks that ran, 0 when a
    gate failed, and None when no content check ran (the turn is reported, not scored). It passes
    when every check that ran passed."""
    ran = [r for r in results if r.score is not None]
    passed = all(r.passed for r in ran)
    content = [r.score for r in ran if not r.gate]
    if not content:
        return None, passed
    if any(r.gate and not r.passed for r in ran):
        return 0.0, False
    return sum(content) / len(content), passed  # type: ignore[arg-type]


# A reply given, word for word, to this many different user messages of one run ignores what
# it is asked. Three, not two: two questions may share a short right answer ("Yes.").
SAME_REPLY_USERS = 3


def _normalized(text: str) -> str:
    return " ".join(_WORD.findall(text.casefold()))


def same_replies(pairs: Sequence[tuple[str, str]]) -> list[int]:
    """For each (user message, reply) of a run: how many different user messages got the same
    reply, both compared after normalisation (case, punctuation, spacing)."""
    askers: dict[str, set[str]] = {}
    for user, reply in pairs:
        askers.setdefault(_normalized(reply), set()).add(_normalized(user))
    return [len(askers[_normalized(reply)]) for _, reply in pairs]
