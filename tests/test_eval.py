"""The eval suite without models: suite reading and its errors, checks and scores on hand-written
replies, ROUGE-L / chrF, judge parsing, compare (exit codes, JUnit, side by side), report, generator."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree

import pytest

from conftest import ROOT, run_cli
from convdistill.eval import (
    Checks,
    compare_results,
    format_regressions,
    generate_memory_suite,
    junit_xml,
    load_suite,
    parse_preference,
    parse_rating,
    rouge_l,
    run_checks,
    turn_score,
    write_report,
)
from convdistill.eval.scoring import case_score, summarize
from convdistill.eval.similarity import chrf
from convdistill.eval.suite import CHECK_NAMES, SCHEMA_PATH, SuiteError, parse_case

SUITES = sorted((ROOT / "eval" / "suites").glob("*.jsonl"))


def write_suite(path: Path, *cases: object) -> Path:
    path.write_text("".join(json.dumps(c) + "\n" for c in cases))
    return path


# -- the shipped suites -------------------------------------------------------------------------
def test_shipped_suites_have_60_cases_of_2_to_6_turns_over_6_abilities() -> None:
    cases = [c for path in SUITES for c in load_suite(path).cases]
    hand_written = [c for c in cases if "synthetic" not in c.tags]
    assert len(hand_written) >= 60
    assert all(2 <= len(c.turns) <= 6 for c in cases)
    assert len({t for c in hand_written for t in c.tags}) >= 6
    assert len({c.id for c in cases}) == len(cases)  # ids unique across files too


def test_schema_file_names_every_check_and_field() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    assert set(schema["$defs"]["checks"]["properties"]) == {*CHECK_NAMES, "case_sensitive"}
    assert set(schema["$defs"]["turn"]["properties"]) == {"user", "reference", "checks"}
    assert set(schema["required"]) == {"id", "tags", "turns"}


# -- suite errors name file, line and field -----------------------------------------------------
GOOD_TURN = {"user": "hi", "reference": "hello"}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"tags": ["x"], "turns": [GOOD_TURN]}), "id: a non-empty string is required"),
        (json.dumps({"id": "c", "tags": [], "turns": [GOOD_TURN]}), "(c): tags: a non-empty list"),
        (json.dumps({"id": "c", "tags": ["x"], "turns": []}), "(c): turns: a non-empty list"),
        (json.dumps({"id": "c", "tags": ["x"], "turns": [GOOD_TURN], "colour": 1}), "colour: unknown field"),
        (json.dumps({"id": "c", "tags": ["x"], "turns": [{"user": ""}]}), "turns[0].user: a non-empty string"),
        (json.dumps({"id": "c", "tags": ["x"], "turns": [{"user": "a", "checks": {"regex": ["("]}}]}),
         "turns[0].checks.regex[0]: bad pattern '('"),
        (json.dumps({"id": "c", "tags": ["x"], "turns": [{"user": "a", "checks": {"contain": "x"}}]}),
         "turns[0].checks.contain: unknown check"),
        (json.dumps({"id": "c", "tags": ["x"], "turns": [{"user": "a", "checks": {"rouge_l": 0.5}}]}),
         "turns[0].checks.rouge_l: needs a reference"),
        (json.dumps({"id": "c", "tags": ["x"], "turns": [{"user": "a", "checks": {"judge": 11}}]}),
         "turns[0].checks.judge: a number from 1 to 10"),
        (json.dumps({"id": "c", "tags": ["x"], "turns": [{"user": "a", "checks": {"max_words": 0}}]}),
         "turns[0].checks.max_words: a positive integer"),
        (json.dumps({"id": "c", "tags": ["x"], "turns": [GOOD_TURN, {"user": "b", "checks": {"recall_of": ["Oslo"]}}]}),
         "turns[1].checks.recall_of[0]: 'Oslo' is not given in any earlier turn"),
    ],
)
def test_bad_suites_are_reported_with_file_line_and_field(tmp_path: Path, line: str, expected: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"id": "ok", "tags": ["x"], "turns": [GOOD_TURN]}) + "\n\n" + line + "\n")
    with pytest.raises(SuiteError) as caught:
        load_suite(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:3") and expected in message


def test_duplicate_ids_and_empty_files_are_errors(tmp_path: Path) -> None:
    case = {"id": "same", "tags": ["x"], "turns": [GOOD_TURN]}
    with pytest.raises(SuiteError, match=r"dup.jsonl:2: id: 'same' is already used on line 1"):
        load_suite(write_suite(tmp_path / "dup.jsonl", case, case))
    with pytest.raises(SuiteError, match="has no cases"):
        load_suite(write_suite(tmp_path / "empty.jsonl"))


def test_cli_reports_a_bad_suite_in_one_line_without_traceback(tmp_path: Path) -> None:
    case = {"id": "c", "tags": ["x"], "turns": [{"user": "a", "checks": {"regex": "["}}]}
    bad = write_suite(tmp_path / "bad.jsonl", case)
    done = run_cli("eval", "run", "--suite", bad, "--model", "nowhere", "-o", tmp_path / "r.json")
    assert done.returncode == 1
    assert "bad.jsonl:1 (c): turns[0].checks.regex[0]: bad pattern" in done.stderr
    assert "Traceback" not in done.stderr


# -- checks on hand-written replies -------------------------------------------------------------
def checks_of(**fields: object) -> Checks:
    return parse_case({"id": "c", "tags": ["t"], "turns": [
        {"user": "My dog is Rex and I live in Oslo.", "reference": "Noted."},
        {"user": "q", "reference": "Your dog is Rex.", "checks": fields}]}, "x").turns[1].checks


def by_name(results: list) -> dict:
    return {r.name: r for r in results}


def test_contains_folds_case_and_accepts_alternatives() -> None:
    checks = checks_of(contains=["rex", ["Oslo", "Norway"]])
    assert by_name(run_checks(checks, "REX lives in norway"))["contains"].passed
    half = by_name(run_checks(checks, "Rex lives here"))["contains"]
    assert (half.passed, half.score) == (False, 0.5) and "'Oslo' or 'Norway'" in half.detail
    sensitive = checks_of(contains=["Rex"], case_sensitive=True)
    assert not run_checks(sensitive, "rex")[0].passed


def test_not_contains_regex_recall_and_max_words() -> None:
    checks = checks_of(not_contains=["cat"], regex=[r"^\w+", r"\d{4}"], recall_of=["Rex", "Oslo"], max_words=4)
    good = by_name(run_checks(checks, "Rex, Oslo 2024"))
    assert all(r.passed for r in good.values())
    bad = by_name(run_checks(checks, "- a CAT called rex in a big town"))
    assert bad["not_contains"].score == 0.0 and "present 'cat'" in bad["not_contains"].detail
    assert bad["regex"].score == 0.0
    assert bad["recall_of"].score == 0.5 and "missing 'Oslo'" in bad["recall_of"].detail
    assert bad["max_words"].score == pytest.approx(4 / 9) and not bad["max_words"].passed


def test_similarity_judge_and_nll_thresholds_score_continuously() -> None:
    checks = checks_of(rouge_l=0.5, chrf=0.5, judge=6, nll=2.0)
    exact = by_name(run_checks(checks, "Your dog is Rex.", "Your dog is Rex.", judge_rating=8, nll=1.5))
    assert all(r.passed and r.score == 1.0 for r in exact.values())
    weak = by_name(run_checks(checks, "dog", "Your dog is Rex.", judge_rating=3, nll=4.0))
    # below the threshold, similarity falls to 0 at half of it, a rating to 0 at 1
    assert weak["rouge_l"].score == pytest.approx(max(0, (rouge_l("dog", "Your dog is Rex.") - 0.25) / 0.25))
    near = by_name(run_checks(checks, "My dog is called Bob.", "Your dog is Rex."))  # ROUGE-L 0.44
    assert near["rouge_l"].score == pytest.approx((4 / 9 - 0.25) / 0.25) and not near["rouge_l"].passed
    assert weak["judge"].score == pytest.approx(2 / 5) and weak["nll"].score == pytest.approx(0.5)
    assert by_name(run_checks(checks, "x", "Your dog is Rex.", judge_rating=1))["judge"].score == 0.0
    skipped = by_name(run_checks(checks, "x", "Your dog is Rex."))
    assert skipped["judge"].score is None and skipped["nll"].score is None
    score, passed = turn_score(run_checks(checks, "Your dog is Rex.", "Your dog is Rex."))
    assert (score, passed) == (1.0, True)  # skipped checks neither help nor hurt


def test_rouge_l_and_chrf_known_values() -> None:
    assert rouge_l("the cat sat on the mat", "the cat sat on the mat") == 1.0
    # LCS "the cat on mat", 4 tokens: P = 4/6, R = 4/5
    precision, recall = 4 / 6, 4 / 5
    expected = 2 * precision * recall / (precision + recall)
    assert rouge_l("the cat was on the mat", "the cat on a mat") == pytest.approx(expected)
    assert rouge_l("", "x") == 0.0
    assert chrf("abc", "abc") == pytest.approx(1.0)
    assert chrf("xyz", "abc") == 0.0
    # "ab" vs "abc": unigrams P=1 R=2/3, bigrams P=1 R=1/2; trigram only on one side (order skipped)
    f = [(5 * p * r) / (4 * p + r) for p, r in [(1, 2 / 3), (1, 1 / 2)]]
    assert chrf("a b", "abc") == pytest.approx(sum(f) / 2)
    assert 0 < chrf("the cat sat", "the cat sits") < 1


def test_case_scores_are_the_minimum_and_tags_and_depths_are_means() -> None:
    def turn(depth: int, score: float | None, passed: bool = True) -> dict:
        return {"depth": depth, "score": score, "passed": passed, "nll": None}

    a = [turn(1, 1.0), turn(2, 0.25, False)]
    b = [turn(1, 0.5), turn(2, None), turn(3, 1.0)]
    assert case_score(a) == (0.25, False) and case_score(b) == (0.5, True)
    cases = [{"id": "a", "tags": ["m", "x"], "turns": a, "score": 0.25, "passed": False},
             {"id": "b", "tags": ["m"], "turns": b, "score": 0.5, "passed": True}]
    s = summarize(cases)
    assert s["score"] == pytest.approx(0.375) and s["cases_passed"] == 1
    assert s["by_tag"] == {"m": pytest.approx(0.375), "x": 0.25}
    assert s["by_depth"] == {"1": 0.75, "2": 0.25, "3": 1.0}


# -- judge output parsing -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "rating"),
    [
        ("The reply is fine. Rating: [[7]]", 7.0),
        ("On a scale of 1 to 10, I rate it [[8.5]].", 8.5),
        ("Score: 6/10", 6.0),
        ("I'd give this 9 out of 10.", 9.0),
        ("**Rating**: 4", 4.0),
        ("rating is **3**", 3.0),
        ("Reason: concise and correct.\n\n**10**", 10.0),
        ("My score: seven", 7.0),
        ("5", 5.0),
        ("Rating: [[2]] ... on reflection, Rating: [[3]]", 3.0),
        ("The assistant forgot turn 1 (see 2 issues). No rating.", None),
        ("", None),
        ("Rating: [[11]]", None),
    ],
)
def test_parse_rating_on_messy_judge_outputs(text: str, rating: float | None) -> None:
    assert parse_rating(text) == rating


@pytest.mark.parametrize(
    ("text", "verdict"),
    [("A is clearer. [[A]]", "A"), ("Verdict: [[B]]", "B"), ("[[C]]", "tie"), ("It's a tie.", "tie"),
     ("Reply B is better because...", "B"), ("b", "B"), ("I cannot decide", None)],
)
def test_parse_preference(text: str, verdict: str | None) -> None:
    assert parse_preference(text) == verdict


# -- compare, JUnit, report ---------------------------------------------------------------------
def results(model: str, scores: dict[str, list[float]]) -> dict:
    cases = []
    for cid, turn_scores in scores.items():
        turns = [{"depth": i + 1, "user": f"u{i}", "reply": f"{model} says {i}", "reference": None, "score": s,
                  "passed": s == 1.0, "nll": None,
                  "checks": [{"name": "contains", "score": s, "passed": s == 1.0, "detail": "missing 'x'",
                              "value": None}]} for i, s in enumerate(turn_scores)]
        cases.append({"id": cid, "tags": ["t"], "turns": turns, "score": min(turn_scores),
                      "passed": all(s == 1.0 for s in turn_scores)})
    return {"format": "convdistill-eval-results/1", "suite": "s.jsonl", "model": model, "history": "gold",
            "judge": None, "created": "now", "summary": summarize(cases), "cases": cases}


def test_compare_flags_drops_beyond_the_tolerance_only() -> None:
    base = results("base", {"a": [1.0, 1.0], "b": [1.0, 0.5], "c": [0.5]})
    new = results("new", {"a": [1.0, 0.9], "b": [1.0, 0.25], "c": [1.0]})
    assert not compare_results(base, base).failed
    loose = compare_results(new, base, tolerance=0.25)  # b drops exactly 0.25: allowed
    assert not loose.failed and [d.id for d in loose.improvements] == ["c"]
    strict = compare_results(new, base, tolerance=0.1)
    assert [d.id for d in strict.regressions] == ["b"]
    assert [t.depth for t in strict.regressions[0].turns] == [2]
    zero = compare_results(new, base, tolerance=0.0)
    assert [d.id for d in zero.regressions] == ["a", "b"]
    text = format_regressions(zero, width=30)
    assert "REGRESSED b [t]: 0.500 -> 0.250" in text and "turn 2: 0.500 -> 0.250" in text
    assert "base says 1" in text and "new says 1" in text  # both replies, side by side
    assert any("base says 1" in line and "| new says 1" in line for line in text.splitlines())


def test_missing_cases_regress_and_new_cases_are_listed() -> None:
    comparison = compare_results(results("new", {"z": [1.0]}), results("base", {"a": [0.0]}))
    assert comparison.failed and comparison.regressions[0].missing and comparison.new_cases == ["z"]


def test_junit_has_one_testcase_per_case_and_failures_for_regressions() -> None:
    comparison = compare_results(results("new", {"a": [0.0], "b": [1.0]}), results("base", {"a": [1.0], "b": [1.0]}))
    root = ElementTree.fromstring(junit_xml(comparison, "s.jsonl"))
    assert root.get("tests") == "2" and root.get("failures") == "1"
    failed = [c.get("name") for c in root.iter("testcase") if c.find("failure") is not None]
    assert failed == ["a"]


def test_cli_compare_exits_1_exactly_on_regression(tmp_path: Path) -> None:
    base, new = tmp_path / "base.json", tmp_path / "new.json"
    base.write_text(json.dumps(results("base", {"a": [1.0, 0.8]})))
    new.write_text(json.dumps(results("new", {"a": [1.0, 0.7]})))
    same = run_cli("eval", "compare", base, "--baseline", base)
    assert same.returncode == 0 and "0 regressed" in same.stdout
    within = run_cli("eval", "compare", new, "--baseline", base, "--tolerance", "0.15")
    assert within.returncode == 0
    junit, report = tmp_path / "junit.xml", tmp_path / "report.md"
    worse = run_cli("eval", "compare", new, "--baseline", base, "--tolerance", "0.05", "--junit", junit,
                    "--report", report)
    assert worse.returncode == 1 and "REGRESSED a" in worse.stdout and "turn 2: 0.800 -> 0.700" in worse.stdout
    assert ElementTree.parse(junit).getroot().get("failures") == "1"
    assert report.with_suffix(".png").read_bytes().startswith(b"\x89PNG")
    bad = run_cli("eval", "compare", tmp_path / "junit.xml", "--baseline", base)
    assert bad.returncode == 1 and "not valid JSON" in bad.stderr and "Traceback" not in bad.stderr


def test_report_has_tables_plot_and_failing_turns(tmp_path: Path) -> None:
    md, png = write_report(results("new", {"a": [1.0, 0.5]}), tmp_path / "r.md", results("base", {"a": [1.0, 1.0]}))
    text = md.read_text()
    assert "| 2 | 0.500 | 1.000 |" in text and "![score by turn depth](r.png)" in text
    assert "REGRESSED a" in text and "`a` turn 2 (0.500): contains: missing 'x'" in text
    assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 5000


# -- the synthetic generator --------------------------------------------------------------------
def test_generator_is_seeded_any_depth_and_judge_free(tmp_path: Path) -> None:
    first = generate_memory_suite(8, (2, 9), seed=3)
    assert first == generate_memory_suite(8, (2, 9), seed=3) and first != generate_memory_suite(8, (2, 9), seed=4)
    deep = generate_memory_suite(2, 12, seed=0)
    assert all(len(c["turns"]) == 12 for c in deep)
    path = write_suite(tmp_path / "gen.jsonl", *first, *deep)
    for case in load_suite(path).cases:  # loads: every recall_of fact was given earlier
        assert case.turns[-1].checks.recall_of and all(t.checks.judge is None for t in case.turns)
        fact = case.turns[-1].checks.recall_of[0]
        assert run_checks(case.turns[-1].checks, f"It is {fact}.")[0].passed
    with pytest.raises(ValueError, match="depth"):
        generate_memory_suite(1, 1)


def test_cli_generate_writes_a_loadable_suite(tmp_path: Path) -> None:
    out = tmp_path / "g.jsonl"
    done = run_cli("eval", "generate", "-n", "5", "--min-depth", "3", "--max-depth", "5", "--seed", "1", "-o", out)
    assert done.returncode == 0, done.stderr
    suite = load_suite(out)
    assert len(suite.cases) == 5 and all(3 <= len(c.turns) <= 5 for c in suite.cases)


# -- history waves, with a deterministic stand-in model (the runner is what is under test) --------
class Echo:
    """Replies 'echo: <last user message>'; records the batches it was given."""

    name = "echo"

    def __init__(self) -> None:
        self.batches: list[int] = []

    def generate(self, conversations: list) -> list[str]:
        self.batches.append(len(conversations))
        return [f"echo: {c[-1]['content']}" for c in conversations]

    def reference_nll(self, pairs: list) -> None:
        return None


def test_gold_mode_continues_a_turn_without_reference_with_the_models_reply(tmp_path: Path) -> None:
    from convdistill.eval import generate_replies

    path = write_suite(tmp_path / "s.jsonl",
                       {"id": "a", "tags": ["t"], "turns": [{"user": "u1", "reference": "r1"}, {"user": "u2"},
                                                            {"user": "u3", "reference": "r3"}, {"user": "u4"}]},
                       {"id": "b", "tags": ["t"], "turns": [{"user": "v1", "reference": "s1"}, {"user": "v2"}]})
    echo = Echo()
    replies, histories = generate_replies(load_suite(path).cases, echo, "gold")
    assert echo.batches == [4, 2]  # a1, a2, b1, b2 at once; a3 and a4 wait for the reply to a2
    assert [m["content"] for m in histories[0][3]] == ["u1", "r1", "u2", "echo: u2", "u3", "r3", "u4"]
    echo.batches.clear()
    replies, histories = generate_replies(load_suite(path).cases, echo, "self")
    assert replies[1] == ["echo: v1", "echo: v2"]
    assert echo.batches == [2, 2, 1, 1]
    assert [m["content"] for m in histories[0][2]] == ["u1", "echo: u1", "u2", "echo: u2", "u3"]
    with pytest.raises(ValueError, match="history mode"):
        generate_replies(load_suite(path).cases, echo, "mixed")


def test_batches_by_length_groups_similar_lengths_within_the_budget() -> None:
    from convdistill.padding import batches_by_length

    lengths = [80, 620, 70, 90, 75]
    # the long row alone: padding the four short ones to 620 would cost 4 x 620 padded tokens
    assert batches_by_length(lengths, 1000) == [[2, 4, 0, 3], [1]]
    assert batches_by_length(lengths, 1000, max_rows=3) == [[2, 4, 0], [3], [1]]
    assert batches_by_length([5000], 1000) == [[0]]  # longer than the budget: a batch of one
    assert batches_by_length([], 1000) == []


def test_only_checks_generates_and_scores_just_those_turns_after_their_gold_history(tmp_path: Path) -> None:
    from convdistill.errors import BadRecipe
    from convdistill.eval import RunOptions, run_suite
    from convdistill.eval.runner import rescore

    path = write_suite(tmp_path / "s.jsonl",
                       {"id": "a", "tags": ["t"], "turns": [{"user": "my cat is Tom", "reference": "r1"},
                                                            {"user": "u2", "reference": "r2"},
                                                            # Echo repeats the question: this recall passes
                                                            {"user": "Tom?", "reference": "Tom.",
                                                             "checks": {"recall_of": ["Tom"]}}]},
                       {"id": "b", "tags": ["t"], "turns": [{"user": "my dog is Rex", "reference": "s1"},
                                                            {"user": "v2"},
                                                            {"user": "v3", "reference": "Rex.",
                                                             "checks": {"recall_of": ["Rex"]}}]})
    suite = load_suite(path)
    echo = Echo()
    results = run_suite(suite, echo, RunOptions(history="gold", nll=False, only_checks=("recall_of",)))
    # a3 and b2 (no reference: b3's history needs it) in the first wave, then b3
    assert echo.batches == [2, 1]
    assert results["only_checks"] == ["recall_of"]
    a, b = results["cases"]
    assert [(t["depth"], t["reply"]) for t in a["turns"]] == [(3, "echo: Tom?")]
    assert [(t["depth"], t["reply"]) for t in b["turns"]] == [(2, "echo: v2"), (3, "echo: v3")]
    assert [t["passed"] for t in a["turns"] + b["turns"]] == [True, True, False]
    summary = results["summary"]  # b2 carries no check: recorded, not scored
    assert (summary["turns"], summary["turns_unscored"], summary["cases_passed"]) == (2, 1, 1)
    again = rescore(results, suite)  # the stored turns map back onto their depths
    assert again["summary"] == summary and [t["depth"] for t in again["cases"][1]["turns"]] == [2, 3]
    with pytest.raises(BadRecipe, match="gold history"):
        run_suite(suite, echo, RunOptions(history="self", only_checks=("recall_of",)))
    with pytest.raises(BadRecipe, match="'recal_of'"):
        run_suite(suite, echo, RunOptions(history="gold", only_checks=("recal_of",)))
