"""`eval import --from mt-bench --reference FILE`: FastChat's reference-answer file.

MT-Bench judges its math, reasoning and coding questions against the answers of a separate file
(``reference_answer/gpt-4.jsonl``: ``{"question_id", "model_id", "choices": [{"index", "turns"}]}``),
not only the inline ``reference`` of ``question.jsonl``. tests/fixtures/mt_bench/reference_answer.jsonl
is ours, in that format: answers for a math question that also has an inline reference, a coding
question that has none, a writing question (not judged against a reference) and a question that is
not in the file, and three bad lines (no choices, a second answer to one question, broken JSON).
"""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from conftest import ROOT
from convdistill.cli.main import app
from convdistill.eval import load_suite
from convdistill.eval.mt_bench import import_mt_bench, judge_prompt, read_reference_answers

FIXTURES = ROOT / "tests" / "fixtures" / "mt_bench"
REFERENCE = FIXTURES / "reference_answer.jsonl"
CODING = {"question_id": 6, "category": "coding",
          "turns": ["Write a Python function that tells whether a string is a palindrome.",
                    "Make it ignore spaces and punctuation."]}


def questions(tmp_path: Path) -> Path:
    """The fixture's five questions and a coding question with no inline reference."""
    path = tmp_path / "question.jsonl"
    path.write_text((FIXTURES / "question.jsonl").read_text() + json.dumps(CODING) + "\n")
    return path


def test_reference_file_lines_are_read_and_bad_ones_named() -> None:
    refs = read_reference_answers(REFERENCE)
    assert (refs.lines_read, len(refs.answers), refs.lines_rejected) == (7, 4, 3)
    assert sorted(refs.answers) == ["1", "2", "6", "99"]
    assert [(p.line, p.kind) for p in refs.problems] == [(5, "wrong_type"), (6, "duplicate"), (7, "malformed_json")]
    assert all(p.file == str(REFERENCE) for p in refs.problems)


def test_reference_answers_guide_the_reference_categories(tmp_path: Path) -> None:
    source = questions(tmp_path)
    inline = {c.id: c for c in import_mt_bench(source).cases}
    # Without the file the coding question has no reference: judged as an open question.
    assert [c.id for c in inline.values() if c.benchmark.reference_guided] == ["mt-bench-2", "mt-bench-3"]
    result = import_mt_bench(source, reference=REFERENCE)
    cases = {c.id: c for c in result.cases}
    assert [c.id for c in cases.values() if c.benchmark.reference_guided] == ["mt-bench-2", "mt-bench-3", "mt-bench-6"]
    # The file's answer is what MT-Bench judges with, over the inline one.
    assert cases["mt-bench-2"].turns[0].reference.startswith("Three pencils cost 45 cents")
    assert cases["mt-bench-6"].turns[1].reference.startswith("Ignore non-letters first")
    # Its answer line was rejected: question 3 keeps its inline reference.
    assert cases["mt-bench-3"].turns[0].reference == inline["mt-bench-3"].turns[0].reference
    # A writing question is not judged against a reference, so its answer is not used.
    assert cases["mt-bench-1"].turns[0].reference is None
    assert result.references.used == {"2", "6"}
    assert "read 7 reference answers, used 2 (2 for questions not imported" in result.summary()
    assert "rejected 3 lines" in result.summary()
    prompt = judge_prompt(cases["mt-bench-6"], 1, [{"role": "user", "content": CODING["turns"][0]},
                                                    {"role": "assistant", "content": "def f(s): ..."},
                                                    {"role": "user", "content": CODING["turns"][1]}], "ok")
    assert "[Reference answers]" in prompt and "Ignore non-letters first" in prompt


def test_cli_reference_option(tmp_path: Path) -> None:
    source, out, rejects = questions(tmp_path), tmp_path / "suite.jsonl", tmp_path / "rejects.jsonl"
    runner = CliRunner()
    done = runner.invoke(app, ["eval", "import", "--from", "mt-bench", str(source), "--reference", str(REFERENCE),
                               "-o", str(out), "--rejects", str(rejects)])
    assert done.exit_code == 0, done.output
    suite = load_suite(out)
    assert sum(c.benchmark.reference_guided for c in suite.cases) == 3
    assert [json.loads(line)["line"] for line in rejects.read_text().splitlines()] == [5, 6, 7]
    failed = runner.invoke(app, ["eval", "import", "--from", "mt-bench", str(source), "--reference", str(REFERENCE),
                                 "-o", str(tmp_path / "x.jsonl"), "--on-error", "fail"])
    assert failed.exit_code == 1 and "3 bad lines" in failed.output and not (tmp_path / "x.jsonl").exists()
    wrong = runner.invoke(app, ["eval", "import", "--from", "mt-bench-101", str(FIXTURES / "mt_bench_101.jsonl"),
                                "--reference", str(REFERENCE), "-o", str(tmp_path / "y.jsonl")])
    assert wrong.exit_code == 2 and "--reference" in wrong.output
