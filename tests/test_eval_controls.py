"""The yardstick against models that do not converse (docs/eval.md, "Gates, content and controls").

Every control (a constant reply, fluent unrelated replies, an echo, nothing, another case's
reply) goes through the real CLI against a real OpenAI-compatible endpoint on 127.0.0.1, on
every shipped suite, in both history modes, and must score at most 0.05 and pass no case. The
teacher's shipped results, rescored by today's code, must clear the best control by 0.2.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from conftest import CLI, ROOT, run_cli, write_jsonl
from convdistill.eval import RunOptions, load_suite, load_suites, run_suite
from convdistill.eval.checks import SAME_REPLY_USERS, CheckResult, same_replies, turn_score
from convdistill.eval.controls import CONTROLS, ControlBackend, control_names, reference_pool
from convdistill.eval.controls_server import controls_app
from convdistill.eval.runner import rescore, run_controls
from convdistill.eval.scoring import bootstrap_interval, paired_difference, summarize
from convdistill.serve import BackgroundApp, ServeSettings, app_server

SUITES = sorted((ROOT / "eval" / "suites").glob("*.jsonl"))
BASELINE = ROOT / "eval" / "baselines" / "smollm2-135m-instruct.json"  # gold history
SELF_BASELINE = ROOT / "eval" / "baselines" / "smollm2-135m-instruct.self.json"
CONTROL_BOUND = 0.05  # a control may score at most this, and pass no case
TEACHER_MARGIN = 0.2  # the teacher's score must clear the best control's by this much


@pytest.fixture(scope="module")
def all_suites() -> Any:
    return load_suites(SUITES)


@pytest.fixture(scope="module")
def endpoint(all_suites: Any) -> Any:
    """The controls served on 127.0.0.1, their shuffled pool drawn from every shipped suite."""
    server = app_server(controls_app(reference_pool(all_suites)), ServeSettings(log_level="warning"))
    with BackgroundApp(server) as live:
        yield live.base_url


def _suite_args() -> list[str]:
    return [arg for path in SUITES for arg in ("--suite", str(path))]


def _per_suite(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The run's summary restricted to the cases of each shipped suite file."""
    ids = {path.stem: {case.id for case in load_suite(path).cases} for path in SUITES}
    return {name: summarize([c for c in results["cases"] if c["id"] in members]) for name, members in ids.items()}


@pytest.mark.parametrize("history", ["gold", "self"])
@pytest.mark.parametrize("control", control_names())
def test_every_control_fails_every_shipped_suite_through_the_cli(
    control: str, history: str, endpoint: str, tmp_path: Path
) -> None:
    out = tmp_path / "results.json"
    done = run_cli("eval", "run", *_suite_args(), "--model", control, "--endpoint", endpoint,
                   "--history", history, "-o", out)
    assert done.returncode == 0, done.stderr
    results = json.loads(out.read_text())
    s = results["summary"]
    assert s["cases"] == 75 and s["cases_unscored"] == 0  # every shipped case asks for content
    assert s["score"] <= CONTROL_BOUND and s["cases_passed"] == 0, (control, history, s["score"])
    for name, summary in _per_suite(results).items():
        assert summary["score"] <= CONTROL_BOUND and summary["cases_passed"] == 0, (control, history, name)
    assert "0/75 (0-0) cases passed" in done.stderr


def test_controls_in_process_match_the_endpoint_and_fail_each_suite_alone(all_suites: Any, endpoint: str) -> None:
    from convdistill.eval import open_backend

    pool = reference_pool(all_suites)
    for control in control_names():
        served = run_suite(all_suites, open_backend(control, endpoint), RunOptions(history="self"))
        local = run_suite(all_suites, ControlBackend(control, pool), RunOptions(history="self"))
        assert [t["reply"] for c in served["cases"] for t in c["turns"]] == \
            [t["reply"] for c in local["cases"] for t in c["turns"]], control
    # Each suite scored on its own (a smaller run: fewer repeats for the same-reply gate to see)
    for path in SUITES:
        for results in run_controls(load_suite(path)):
            s = results["summary"]
            assert s["score"] <= CONTROL_BOUND and s["cases_passed"] == 0, (path.name, results["model"], s)


def test_the_controls_answer_as_named() -> None:
    suite = load_suites(SUITES)
    pool = reference_pool(suite)
    ask = [{"role": "user", "content": "What is the capital of Australia?"}]
    assert ControlBackend("control:echo").generate([ask]) == ["What is the capital of Australia?"]
    assert ControlBackend("control:empty").generate([ask]) == [""]
    constant = ControlBackend("control:constant").generate([ask, [{"role": "user", "content": "Hi"}]])
    assert constant[0] == constant[1] != ""
    shuffled = ControlBackend("control:shuffled", pool).generate([ask])[0]
    own = {ref for user, ref in pool if user == ask[0]["content"]}
    assert shuffled in {ref for _, ref in pool} and shuffled not in own  # another case's reference
    unrelated = ControlBackend("control:unrelated").generate([ask] * 2)
    assert unrelated[0] == unrelated[1]  # deterministic: the same conversation, the same reply
    with pytest.raises(Exception, match="unknown control model 'control:nope'"):
        ControlBackend("control:nope")
    assert set(CONTROLS) == {"constant", "unrelated", "echo", "empty", "shuffled"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_eval_controls_serve_answers_the_openai_client() -> None:
    port = _free_port()
    process = subprocess.Popen([*CLI, "eval", "controls", "--serve", "--port", str(port), "-s", "anaphora"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        deadline = time.monotonic() + 60
        while True:
            try:
                models = [m.id for m in client.models.list()]
                break
            except openai.APIConnectionError:
                assert process.poll() is None and time.monotonic() < deadline, "the controls server did not start"
                time.sleep(0.3)
        assert models == control_names()
        reply = client.chat.completions.create(
            model="control:echo", messages=[{"role": "user", "content": "Say something about otters."}])
        assert reply.choices[0].message.content == "Say something about otters."
        with pytest.raises(openai.NotFoundError, match="not served here"):
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    finally:
        process.terminate()
        process.wait(15)


def test_a_case_of_format_checks_only_is_reported_unscored(tmp_path: Path) -> None:
    suite = write_jsonl(tmp_path / "suite.jsonl", [
        {"id": "format-only", "tags": ["t"], "turns": [
            {"user": "Answer in at most five words from now on.", "checks": {"max_words": 5, "no_loops": True}},
            {"user": "Why is the sky blue?", "checks": {"max_words": 5, "format_regex": ["\\.$"]}}]},
        {"id": "asks", "tags": ["t"], "turns": [
            {"user": "What is the capital of Italy?", "reference": "Rome.", "checks": {"contains": ["Rome"]}}]},
    ])
    out, report = tmp_path / "r.json", tmp_path / "r.md"
    done = run_cli("eval", "run", "-s", suite, "-m", "control:echo", "-o", out, "--report", report)
    assert done.returncode == 0, done.stderr
    results = json.loads(out.read_text())
    unscored = next(c for c in results["cases"] if c["id"] == "format-only")
    assert unscored["score"] is None and all(t["score"] is None for t in unscored["turns"])
    s = results["summary"]
    assert (s["cases"], s["cases_unscored"], s["turns"], s["turns_unscored"]) == (1, 1, 1, 2)
    assert "1 cases unscored" in done.stderr
    assert "| unscored (no content check) | 1 cases, 2 turns |" in report.read_text()


def _result(name: str, score: float | None, passed: bool | None) -> CheckResult:
    return CheckResult(name, score, passed, "")


def test_gates_pass_or_fail_a_turn_but_earn_nothing() -> None:
    content = _result("contains", 0.5, False)
    assert turn_score([_result("max_words", 1.0, True), content]) == (0.5, False)
    assert turn_score([_result("max_words", 0.2, False), _result("contains", 1.0, True)]) == (0.0, False)
    assert turn_score([_result("not_contains", 1.0, True), _result("no_loops", 1.0, True)]) == (None, True)
    assert turn_score([_result("format_regex", 0.0, False)]) == (None, False)
    assert turn_score([_result("judge", None, None), _result("max_words", 1.0, True)]) == (None, True)


def test_the_same_reply_to_different_questions_fails_a_gate(tmp_path: Path) -> None:
    pairs = [("Q1", "Paris."), ("q1!", "paris"), ("Q2", "Paris"), ("Q3", "Rome")]
    assert same_replies(pairs) == [2, 2, 2, 1]  # Q1 and q1! are one question after normalisation
    assert SAME_REPLY_USERS == 3
    facts = [{"user": f"My {thing} is {value}.", "checks": {"max_words": 20}}
             for thing, value in (("dog", "Rex"), ("car", "red"), ("city", "Oslo"))]
    questions = [{"user": f"What is my {thing}?", "reference": value, "checks": {"recall_of": [value]}}
                 for thing, value in (("dog", "Rex"), ("car", "red"), ("city", "Oslo"))]
    path = write_jsonl(tmp_path / "s.jsonl", [{"id": "c", "tags": ["t"], "turns": [*facts, *questions]}])

    class Noted:  # acknowledges every fact alike (fine), then gives one answer to every question
        name = "noted"

        def generate(self, conversations: Any) -> list[str]:
            return ["Noted." if c[-1]["content"].startswith("My") else "Rex, red and Oslo." for c in conversations]

        def reference_nll(self, pairs: Any) -> None:
            return None

    turns = run_suite(load_suite(path), Noted())["cases"][0]["turns"]
    assert [t["passed"] for t in turns[:3]] == [True, True, True]  # setup turns: "Noted." thrice is fine
    for turn in turns[3:]:  # recall holds, but the reply ignores which question was asked
        assert turn["score"] == 0.0 and [c["name"] for c in turn["checks"] if not c["passed"]] == ["same_reply"]


def test_bootstrap_intervals_and_the_paired_verdict() -> None:
    low, high = bootstrap_interval([0.0, 1.0] * 20) or (0, 0)
    assert low < 0.5 < high and high - low < 0.4
    assert bootstrap_interval([0.3, 0.3, 0.3]) == pytest.approx((0.3, 0.3))
    assert bootstrap_interval([]) is None
    base = json.loads(BASELINE.read_text())
    same = paired_difference(base, base)
    assert same is not None and same["verdict"] == "within noise" and same["score_difference"] == 0


@pytest.mark.parametrize("baseline", [BASELINE, SELF_BASELINE], ids=["gold", "self"])
def test_the_teacher_clears_the_best_control(baseline: Path, all_suites: Any) -> None:
    shipped = json.loads(baseline.read_text())
    teacher = rescore(shipped, all_suites)  # today's scoring and suites on the shipped replies
    for key in ("score", "cases_passed", "cases", "turns_passed", "turns", "turns_gated"):
        assert teacher["summary"][key] == pytest.approx(shipped["summary"][key]), f"stale baseline: {key}"
    best = max(r["summary"]["score"] for r in run_controls(all_suites, histories=(shipped["history"],)))
    assert teacher["summary"]["score"] >= best + TEACHER_MARGIN - 1e-9, (teacher["summary"]["score"], best)
    assert teacher["summary"]["cases_passed"] >= 10


def test_compare_and_report_read_the_teacher_against_the_controls(all_suites: Any, tmp_path: Path) -> None:
    controls = tmp_path / "controls"
    assert run_cli("eval", "controls", *_suite_args(), "-o", controls, "--history", "gold").returncode == 0
    constant = controls / "control-constant-gold.json"
    done = run_cli("eval", "compare", constant, "--baseline", BASELINE)
    assert done.returncode == 1 and "paired over 75 cases: worse" in done.stdout, done.stdout
    done = run_cli("eval", "compare", BASELINE, "--baseline", BASELINE)
    assert done.returncode == 0 and "within noise" in done.stdout
    report, page = tmp_path / "report.md", tmp_path / "report.html"
    done = run_cli("eval", "report", BASELINE, "--controls", controls, "-o", report, "--html", page)
    assert done.returncode == 0, done.stderr
    text = report.read_text()
    assert "## The floor: control models that do not converse" in text
    assert all(f"| {name} | 0/75 (0-0) |" in text for name in control_names())
    html = page.read_text()
    assert "The floor: control models that do not converse" in html
    assert all(f"<td>{name}</td><td>0/75 (0-0)</td>" in html for name in control_names())
