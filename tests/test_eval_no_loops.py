"""The degenerate-reply check (`no_loops`): empty replies, loops and echoes fail and zero the turn."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from convdistill.eval.checks import degenerate, run_checks, turn_score
from convdistill.eval.suite import Checks, SuiteError, load_suite

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("reply", [
    "Paris is the capital of France.",
    "1. Preheat the oven. 2. Mix the flour. 3. Bake for twenty minutes.",
    "No, no, I meant the other one.",
    "Yes.",
    "The cat sat on the mat, and the cat sat still.",  # "the cat sat" twice: fine
])
def test_ordinary_replies_pass(reply: str) -> None:
    assert degenerate(reply, "Where is it?") is None


@pytest.mark.parametrize("reply, why", [
    ("", "empty reply"),
    ("   \n ", "empty reply"),
    ("!!!", "empty reply"),  # no word at all
    ("I am a I am a I am a I am a I am a", "repeats 'i am a'"),
    ("the the the the the the", "repeats 'the the the'"),
    ("Sure! " + "Here is the answer. " * 5, "repeats"),
    ("ababababababababab", "in a row"),
    ("What is the capital of France?", "repeats the user's message"),
    ("what is the capital of france", "repeats the user's message"),
])
def test_degenerate_replies_fail(reply: str, why: str) -> None:
    problem = degenerate(reply, "What is the capital of France?")
    assert problem is not None and why in problem


def test_echo_needs_a_long_enough_user_turn() -> None:
    assert degenerate("Why? Because it rains.", "Why?") is None
    long_user = "Please tell me the name of the tallest mountain in Africa"
    assert degenerate(long_user + " Kilimanjaro.", long_user) is not None
    assert degenerate(long_user, None) is None  # no user turn given: no echo test


def test_failed_no_loops_zeroes_the_turn() -> None:
    checks = Checks(contains=("Canberra",), max_words=30, not_contains=("Sydney",), no_loops=True)
    looping = run_checks(checks, "Canberra Canberra Canberra Canberra Canberra Canberra", user="Is it Canberra?")
    score, passed = turn_score(looping)
    assert (score, passed) == (0.0, False)
    assert [r.name for r in looping if not r.passed] == ["no_loops"]
    # the same checks without no_loops would have passed that loop
    loop_unchecked = Checks(contains=("Canberra",), max_words=30, not_contains=("Sydney",))
    assert turn_score(run_checks(loop_unchecked, "Canberra Canberra Canberra Canberra Canberra Canberra"))[0] == 1.0
    answer = run_checks(checks, "Yes, Canberra.", user="Is it Canberra?")
    assert turn_score(answer) == (1.0, True)
    # format checks alone are gates: they pass or fail the turn but give it no score
    assert turn_score(run_checks(Checks(max_words=30, no_loops=True), "Yes.", user="Is it Canberra?")) == (None, True)
    assert turn_score(run_checks(Checks(max_words=30, no_loops=True), "", user="Is it Canberra?")) == (None, False)


def test_no_loops_must_be_a_bool(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    case = {"id": "x", "tags": ["t"], "turns": [{"user": "hi", "checks": {"no_loops": "yes"}}]}
    bad.write_text(json.dumps(case) + "\n")
    with pytest.raises(SuiteError, match=r"bad.jsonl:1 \(x\): turns\[0\].checks.no_loops: must be true or false"):
        load_suite(bad)


def test_shipped_suites_check_every_turn() -> None:
    files = sorted((ROOT / "eval" / "suites").glob("*.jsonl"))
    assert len(files) >= 7
    for path in files:
        for case in load_suite(path).cases:
            assert all(turn.checks.no_loops for turn in case.turns), f"{path.name}: {case.id}"
