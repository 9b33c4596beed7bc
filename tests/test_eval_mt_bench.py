"""MT-Bench and MT-Bench-101 question files as suite cases, and their judging.

Fixtures in tests/fixtures/mt_bench/ are questions written for this project in the two formats
(never the benchmarks' own). Fast tests: import (both formats, per-task turn rules, bad lines),
rating parsing on messy judge replies, the judge prompts, and the benchmarks' aggregation over
a run judged by a scripted judge on 127.0.0.1. Slow: the whole workflow through the CLI with the
embedded SmolLM2 served on 127.0.0.1 as both the model and the judge.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import ROOT, ScriptedEndpoint, run_cli, serve_scripted
from convdistill.cli.main import app
from convdistill.eval import Judge, RunOptions, load_suite, run_suite
from convdistill.eval.judge import parse_bracket_rating, read_benchmark_rating
from convdistill.eval.mt_bench import (
    MT_BENCH_101_CONTEXT_FIRST,
    MT_BENCH_101_TASKS,
    import_mt_bench,
    import_mt_bench_101,
    judge_prompt,
    mt_bench_101_scored_turns,
)
from convdistill.eval.suite import Suite

FIXTURES = ROOT / "tests" / "fixtures" / "mt_bench"
QUESTIONS = FIXTURES / "question.jsonl"
DIALOGUES = FIXTURES / "mt_bench_101.jsonl"


def judged_turns(case: object) -> list[int]:
    return [k for k, t in enumerate(case.turns) if t.checks.judge is not None]  # type: ignore[attr-defined]


# -- import ---------------------------------------------------------------------------------------
def test_mt_bench_questions_become_self_history_cases_with_both_turns_judged() -> None:
    result = import_mt_bench(QUESTIONS, pass_rating=7)
    assert (result.lines_read, result.lines_kept, result.lines_rejected) == (5, 5, 0)
    by_id = {c.id: c for c in result.cases}
    assert set(by_id) == {f"mt-bench-{n}" for n in range(1, 6)}
    for case in result.cases:
        assert case.history == "self" and case.benchmark is not None and case.tags == (case.benchmark.group,)
        assert judged_turns(case) == [0, 1] and all(t.checks.judge == 7 for t in case.turns)
    math, writing = by_id["mt-bench-2"], by_id["mt-bench-1"]
    assert math.tags == ("math",) and math.benchmark.reference_guided
    assert math.turns[1].reference.startswith("Each pencil costs 15 cents")
    assert by_id["mt-bench-3"].benchmark.reference_guided  # reasoning, with a reference
    assert not writing.benchmark.reference_guided and writing.turns[0].reference is None
    assert math.benchmark.source_id == "2"


def test_mt_bench_101_turn_rules_gold_history_and_references() -> None:
    result = import_mt_bench_101(DIALOGUES)
    by_task = {c.benchmark.group: c for c in result.cases}
    assert set(by_task) == {"CM", "MR", "SI", "AR", "TS"}
    for case in result.cases:
        assert case.history == "gold" and case.tags == (case.benchmark.group,)
        assert all(t.reference for t in case.turns)  # the bot replies are the gold history
    assert judged_turns(by_task["CM"]) == [1]  # the first turn only gives the facts
    assert judged_turns(by_task["AR"]) == [1]
    assert judged_turns(by_task["SI"]) == [0, 1, 2]  # asking for the material is judged too
    assert judged_turns(by_task["TS"]) == [0, 1]
    assert judged_turns(by_task["MR"]) == [0, 1]
    assert by_task["MR"].benchmark.reference_guided and not by_task["CM"].benchmark.reference_guided
    assert by_task["CM"].turns[1].reference == "Mara is flying to Lima next Tuesday."
    assert by_task["CM"].id == "mt-bench-101-CM-1"


@pytest.mark.parametrize("task", list(MT_BENCH_101_TASKS))
def test_every_mt_bench_101_task_has_its_turn_rule(task: str) -> None:
    first = 1 if task in MT_BENCH_101_CONTEXT_FIRST else 0
    assert mt_bench_101_scored_turns(task, 4) == list(range(first, 4))
    assert len(MT_BENCH_101_TASKS) == 13


def test_cli_import_writes_a_loadable_suite(tmp_path: Path) -> None:
    runner = CliRunner()
    for source, benchmark, cases in ((QUESTIONS, "mt-bench", 5), (DIALOGUES, "mt-bench-101", 5)):
        out = tmp_path / f"{benchmark}.jsonl"
        done = runner.invoke(app, ["eval", "import", "--from", benchmark, str(source), "-o", str(out)])
        assert done.exit_code == 0, done.output
        suite = load_suite(out)
        assert len(suite.cases) == cases
        assert [c.to_dict() for c in suite.cases] == [c.to_dict() for c in
                                                       (import_mt_bench if benchmark == "mt-bench"
                                                        else import_mt_bench_101)(source).cases]


def test_bad_lines_are_reported_one_line_per_problem_and_valid_lines_kept(tmp_path: Path) -> None:
    out, rejects = tmp_path / "q.jsonl", tmp_path / "rejects.jsonl"
    bad = FIXTURES / "question_bad.jsonl"
    done = run_cli("eval", "import", "--from", "mt-bench", bad, "-o", out, "--rejects", rejects)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    expected = [
        (2, "category: missing"),
        (3, "turns: a non-empty list of strings is required, got str"),
        (4, "question_id: an integer or a non-empty string is required, got True"),
        (4, "turns[1]: a non-empty string is required"),
        (6, "a JSON object is required, got list"),
        (7, "reference: 2 answers for 1 turns"),
        (8, "id: 'mt-bench-10' is already used on line 1"),
        (10, "not valid JSON"),
    ]
    lines = [line for line in done.stderr.splitlines() if line.startswith("rejected ")]
    assert len(lines) == len(expected)
    for line, (number, text) in zip(lines, expected, strict=True):
        assert line.startswith(f"rejected {bad}:{number}: ") and text in line, line
    assert "read 9 mt-bench lines, kept 2 cases" in done.stderr and "rejected 7 lines (8 problems)" in done.stderr
    assert [c.id for c in load_suite(out).cases] == ["mt-bench-10", "mt-bench-14"]
    assert len(rejects.read_text().splitlines()) == 8

    bad101 = FIXTURES / "mt_bench_101_bad.jsonl"
    done = run_cli("eval", "import", "--from", "mt-bench-101", bad101, "-o", out, "--on-error", "fail")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"{bad101}:2: task: unknown MT-Bench-101 task 'XX'" in done.stderr
    assert f"{bad101}:3: history: task CM judges the turns after the first" in done.stderr
    assert f"{bad101}:4: id: missing" in done.stderr
    assert f"{bad101}:5: history[0].bot: missing" in done.stderr
    assert f"{bad101}:5: history[1].user: missing" in done.stderr
    assert "nothing written" in done.stderr
    assert [c.id for c in load_suite(out).cases] == ["mt-bench-10", "mt-bench-14"]  # the earlier file, untouched
    kept = import_mt_bench_101(bad101)
    assert [c.id for c in kept.cases] == ["mt-bench-101-GR-1", "mt-bench-101-IC-7"] and kept.lines_read == 7


def test_a_bad_benchmark_field_in_a_suite_is_named() -> None:
    from convdistill.eval.suite import SuiteError, parse_case

    case = import_mt_bench_101(DIALOGUES).cases[0].to_dict()
    case["benchmark"]["group"] = "ZZ"
    with pytest.raises(SuiteError, match=r"s.jsonl:1 \(mt-bench-101-CM-1\): benchmark.group: unknown MT-Bench-101"):
        parse_case(case, "s.jsonl:1")
    case["benchmark"] = {"name": "mt-bench", "group": "math"}
    case["history"] = "mixed"
    with pytest.raises(SuiteError, match="history: gold or self is required"):
        parse_case(case, "s.jsonl:1")


# -- ratings on messy judge replies ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "rating", "form"),
    [
        ("Clear and correct. Rating: [[8]]", 8.0, "bracket"),
        ("Rating: [[ 7.5 ]]", 7.5, "bracket"),
        ("[[3]] at first sight; on reflection [[7]]", 3.0, "bracket"),  # the first, as the benchmarks read
        ("As of [2023] it was fine; I give it [6].", 6.0, "bracket"),  # a year in brackets is no rating
        ("On the [20160220] scale... Rating: [[4]]", 4.0, "bracket"),
        ("[[0]] is not on the scale, Rating: 5", 5.0, "other"),
        ("Rating 5", 5.0, "other"),  # what a small judge writes: not the convention
        ("I'd give this 9 out of 10.", 9.0, "other"),
        ("The given answer is worth 5 out of 6 on a 2-star rating.", None, "none"),
        ("", None, "none"),
    ],
)
def test_benchmark_ratings_are_read_in_the_bracket_convention_first(text: str, rating: float | None,
                                                                    form: str) -> None:
    assert read_benchmark_rating(text) == (rating, form)
    assert parse_bracket_rating(text) == (rating if form == "bracket" else None)


# -- judge prompts ---------------------------------------------------------------------------------
def test_judge_prompts_follow_each_benchmark() -> None:
    math = next(c for c in import_mt_bench(QUESTIONS).cases if c.id == "mt-bench-2")
    history = [{"role": "user", "content": math.turns[0].user}, {"role": "assistant", "content": "180 cents."},
               {"role": "user", "content": math.turns[1].user}]
    second = judge_prompt(math, 1, history, "13 pencils, 5 cents back.")
    assert "turn 2" in second and "180 cents." in second and math.turns[0].user in second
    assert math.turns[0].reference in second and math.turns[1].reference in second  # reference-guided
    assert second.count("THE REPLY TO RATE") == 1 and "Rating: [[5]]" in second
    writing = next(c for c in import_mt_bench(QUESTIONS).cases if c.id == "mt-bench-1")
    first = judge_prompt(writing, 0, history[:1], "A poem.")
    assert "Reference" not in first and "answer to the user's question below" in first

    dialogues = {c.benchmark.group: c for c in import_mt_bench_101(DIALOGUES).cases}
    mr, cm = dialogues["MR"], dialogues["CM"]
    gold = [{"role": "user", "content": mr.turns[0].user}, {"role": "assistant", "content": mr.turns[0].reference},
            {"role": "user", "content": mr.turns[1].user}]
    prompt = judge_prompt(mr, 1, gold, "96 square centimetres.")
    assert "mathematical reasoning" in prompt and mr.turns[1].reference in prompt
    assert prompt.count(mr.turns[0].reference) == 1  # in the history, not again as a reference
    cm_prompt = judge_prompt(cm, 1, [{"role": "user", "content": cm.turns[0].user},
                                     {"role": "assistant", "content": cm.turns[0].reference},
                                     {"role": "user", "content": cm.turns[1].user}], "Lima, Tuesday.")
    assert "context memory" in cm_prompt and cm.turns[1].reference not in cm_prompt


# -- aggregation, with a scripted judge on 127.0.0.1 and a model that echoes ------------------------
def rating_for(reply: str) -> int:
    return len(reply) % 9 + 1


class ScriptedJudge(ScriptedEndpoint):
    """Rates the reply to rate by its length; the three seeds write it three ways, the third a 10."""

    def answer(self, body: dict) -> str:
        prompt, seed = body["messages"][-1]["content"], body.get("seed", 0)
        reply = prompt.split("THE REPLY TO RATE\n", 1)[1].split("\n\n", 1)[0]
        return ["Sound. Rating: [[{r}]]", "Rating {r}", "Superb, [[10]]"][seed % 3].format(r=rating_for(reply))


@pytest.fixture(scope="module")
def judge_url() -> Iterator[str]:
    with serve_scripted(ScriptedJudge) as url:
        yield url


class Echo:
    """The model: repeats the last user message (what it saw is what is tested)."""

    name = "echo"

    def __init__(self) -> None:
        self.seen: list[list[dict[str, str]]] = []

    def generate(self, conversations: list) -> list[str]:
        self.seen += conversations
        return [f"echo: {c[-1]['content']}" for c in conversations]

    def reference_nll(self, pairs: list) -> None:
        return None


def test_benchmark_scores_are_computed_as_the_benchmarks_compute_them(judge_url: str) -> None:
    cases = import_mt_bench(QUESTIONS).cases + import_mt_bench_101(DIALOGUES).cases
    echo = Echo()
    # The run's own history is gold; the MT-Bench cases keep their self history.
    options = RunOptions(history="gold", judge=Judge(judge_url, "j"))
    results = run_suite(Suite("mixed.jsonl", tuple(cases)), echo, options)
    math_turn_2 = next(h for h in echo.seen if h[-1]["content"].startswith("How many pencils"))
    assert math_turn_2[1]["content"].startswith("echo: A shop sells")  # its own reply, not the reference
    mr_turn_2 = next(h for h in echo.seen if h[-1]["content"].startswith("If we double"))
    assert mr_turn_2[1]["content"] == "The area is 6 x 4 = 24 square centimetres."  # gold history

    bench = results["summary"]["benchmarks"]
    expected_turn: dict[str, list[float]] = {}
    for case in results["cases"]:
        for turn in case["turns"]:
            judged = any(c["name"] == "judge" for c in turn["checks"])
            if not judged:
                assert "judge_samples" not in turn
                continue
            r = rating_for(turn["reply"])
            assert turn["judge_samples"] == [r, r, 10] and turn["judge_forms"] == ["bracket", "other", "bracket"]
            assert turn["judge_spread"] == 10 - r
            expected_turn.setdefault(case["id"], []).append(float(r))
    mt = bench["mt-bench"]
    mt_ratings = {c: v for c, v in expected_turn.items() if not c.startswith("mt-bench-101")}
    assert mt["overall"] == pytest.approx(statistics.mean(r for v in mt_ratings.values() for r in v))
    assert mt["by_group"]["math"]["rating"] == pytest.approx(statistics.mean(mt_ratings["mt-bench-2"]))
    assert mt["by_turn"]["2"] == pytest.approx(statistics.mean(v[1] for v in mt_ratings.values()))
    assert mt["turns_judged"] == mt["turns_rated"] == 10 and mt["rating_forms"] == {"bracket": 20, "other": 10}

    m101 = bench["mt-bench-101"]
    dialogue = {c.split("-")[3]: min(v) for c, v in expected_turn.items() if c.startswith("mt-bench-101")}
    assert {g: v["rating"] for g, v in m101["by_group"].items()} == pytest.approx(dialogue)
    assert m101["overall"] == pytest.approx(statistics.mean(dialogue.values()))  # the mean over tasks
    assert m101["turns_judged"] == 9
    # Our 0..1 scores beside them: a case scores its worst turn; below the pass rating of 6 a
    # rating scores (rating - 1) / (6 - 1), 0 at the lowest rating.
    cm = next(c for c in results["cases"] if c["id"] == "mt-bench-101-CM-1")
    assert cm["turns"][0]["score"] is None and cm["score"] == pytest.approx(min(1.0, (dialogue["CM"] - 1) / 5))
    assert m101["by_group"]["CM"]["score"] == cm["score"]


# -- the whole workflow with the embedded SmolLM2 as model and judge --------------------------------
@pytest.mark.slow
def test_import_run_and_report_with_smollm2_as_model_and_judge(tmp_path: Path) -> None:
    import torch

    from convdistill.serve import BackgroundServer, load_chat_model

    name = "smollm2-135m-instruct"
    questions, dialogues = tmp_path / "question.jsonl", tmp_path / "mt_bench_101.jsonl"
    questions.write_text(QUESTIONS.read_text().splitlines()[1] + "\n")  # the math question: reference-guided
    dialogues.write_text(DIALOGUES.read_text().splitlines()[0] + "\n")  # CM: the first turn is not judged
    runner = CliRunner()
    suites = []
    for source, benchmark in ((questions, "mt-bench"), (dialogues, "mt-bench-101")):
        suites += ["--suite", str(tmp_path / f"{benchmark}.suite.jsonl")]
        done = runner.invoke(app, ["eval", "import", "--from", benchmark, str(source), "-o", suites[-1]])
        assert done.exit_code == 0, done.output
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with BackgroundServer(load_chat_model(name)) as server:
            # Both suites in one run: every judgment goes to the server at once, and it batches them.
            done = runner.invoke(app, [
                "eval", "run", *suites, "--model", name, "--endpoint", server.base_url,
                "--judge-url", server.base_url, "--judge-model", name, "--judge-max-tokens", "40",
                "--max-tokens", "32", "-o", str(tmp_path / "results.json")])
    finally:
        torch.set_num_threads(threads)
    assert done.exit_code == 0, done.output
    for benchmark in ("mt-bench", "mt-bench-101"):
        assert re.search(rf"{benchmark}: (\d+\.\d+|n/a) / 10 \(", done.output), done.output

    results = json.loads((tmp_path / "results.json").read_text())
    for benchmark, judged_depths in (("mt-bench", [1, 2]), ("mt-bench-101", [2])):
        (case,) = [c for c in results["cases"] if c["benchmark"]["name"] == benchmark]
        assert case["history"] == ("self" if benchmark == "mt-bench" else "gold")
        assert [t["depth"] for t in case["turns"] if "judge_samples" in t] == judged_depths
        medians = []
        for turn in case["turns"]:
            if "judge_samples" not in turn:
                assert all(c["name"] != "judge" for c in turn["checks"])
                continue
            samples, forms = turn["judge_samples"], turn["judge_forms"]
            assert len(samples) == len(forms) == 3  # n = 3 judgments per turn
            usable = [s for s in samples if s is not None]
            assert all(1 <= s <= 10 for s in usable)
            assert all((s is None) == (f == "none") for s, f in zip(samples, forms, strict=True))
            check = next(c for c in turn["checks"] if c["name"] == "judge")
            assert check["value"] == (statistics.median(usable) if usable else None)
            assert turn["judge_spread"] == (max(usable) - min(usable) if usable else None)
            if usable:
                medians.append(check["value"])
        summary = results["summary"]["benchmarks"][benchmark]
        assert summary["turns_judged"] == len(judged_depths) and summary["turns_rated"] == len(medians)
        expected = (statistics.mean(medians) if benchmark == "mt-bench" else min(medians)) if medians else None
        assert summary["overall"] == expected
        assert summary["by_group"][case["tags"][0]]["score"] == case["score"]
    # The Markdown report shows each benchmark's table beside ours.
    done = runner.invoke(app, ["eval", "report", str(tmp_path / "results.json"), "-o", str(tmp_path / "r.md")])
    report = (tmp_path / "r.md").read_text()
    assert done.exit_code == 0 and "## mt-bench (ratings 1-10" in report and "## mt-bench-101 (ratings" in report
