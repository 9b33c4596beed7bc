"""Batch files for the teacher: `--batch-out` rounds answered by `teacher batch run` and read back
with `--batch-in` give the live run's output byte for byte; bad output files are reported line
by line and lose nothing valid."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from conftest import SAMPLE, run_cli
from convdistill.conversation_trees import Selection
from convdistill.teacher import EndpointSettings, RunOptions, TeacherSettings, run_teacher
from convdistill.teacher.batch import run_batch_file
from convdistill.teacher.request_cache import RequestCache

PINNED = "2026-01-01T00:00:00+00:00"
TEACHER = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample's three smallest trees: short prompts keep the teacher's rounds quick."""
    path = tmp_path_factory.mktemp("data") / "three.jsonl"
    trees = sorted(SAMPLE.read_bytes().splitlines(keepends=True), key=len)[:3]
    path.write_bytes(b"".join(trees))
    return path


def lines(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@pytest.mark.slow
def test_extend_through_batch_files_equals_the_live_run_byte_for_byte(three: Path, tmp_path: Path):
    from convdistill.serve import BackgroundServer, load_chat_model

    teacher = load_chat_model(TEACHER)  # one model for both routes: loaded once
    settings = TeacherSettings(turns=2, max_tokens=32, simulator_max_tokens=32,
                               selection=Selection(min_assistant_turns=0))

    def options(cache: str, **batch: Path) -> RunOptions:
        return RunOptions(cache_path=tmp_path / cache, created_date=PINNED, max_trees=3, **batch)

    with BackgroundServer(teacher) as server:
        live = run_teacher(three, tmp_path / "live.jsonl", settings,
                           EndpointSettings(server.base_url, TEACHER, timeout_s=600), options=options("live.sqlite"))
    assert live.operation.exchanges_added == 6 and not live.operation.failures  # 3 trees x 2 exchanges

    unused = EndpointSettings("http://127.0.0.1:9/v1", TEACHER, max_retries=6)  # nothing may be sent
    out = tmp_path / "batch.jsonl"
    answers: Path | None = None
    rounds = 0
    while True:
        requests = tmp_path / f"requests-{rounds + 1}.jsonl"
        batch = {"batch_out": requests, **({"batch_in": answers} if answers else {})}
        report = run_teacher(three, out, settings, unused, options=options("batch.sqlite", **batch))
        assert report.usage.requests_sent == 0
        if not report.batch_requests:
            break
        rounds += 1
        assert not out.exists() and requests.is_file()  # no half-extended trees meanwhile
        assert all(set(r) == {"custom_id", "method", "url", "body"} for r in lines(requests))
        answers = tmp_path / f"answers-{rounds}.jsonl"
        run_batch_file(requests, answers, teacher)
        assert report.batch_requests == len(lines(answers))
    assert rounds >= 4  # a user turn, its answer, the next user turn, its answer: each a round
    assert out.read_bytes() == (tmp_path / "live.jsonl").read_bytes()


def test_a_bad_batch_output_file_is_reported_line_by_line_and_loses_nothing(three: Path, tmp_path: Path):
    from convdistill.models import init_student

    folder = init_student("llama", "tiny", tmp_path / "tiny").path
    common = ["extend", three, "-o", tmp_path / "out.jsonl", "--turns", "1", "--max-trees", "3", "--model", "tiny",
              "--cache", tmp_path / "c.sqlite", "--max-new-tokens", "8", "--created-date", PINNED]
    first = run_cli(*common, "--batch-out", tmp_path / "r1.jsonl")
    assert first.returncode == 0, first.stderr
    asked = lines(tmp_path / "r1.jsonl")
    assert len(asked) == 3 and not (tmp_path / "out.jsonl").exists()
    ran = run_cli("teacher", "batch", "run", tmp_path / "r1.jsonl", tmp_path / "a1.jsonl", "--model", folder)
    assert ran.returncode == 0, ran.stderr
    good = (tmp_path / "a1.jsonl").read_bytes().splitlines()
    assert [orjson.loads(g)["custom_id"] for g in good] == [a["custom_id"] for a in asked]
    assert all(orjson.loads(g)["response"]["status_code"] == 200 for g in good)

    error = orjson.loads(good[1])
    error.update(response=None, error={"code": "batch_expired", "message": "expired"})
    failed = orjson.loads(good[2])
    failed["response"].update(status_code=500, body={"error": {"message": "overloaded"}})
    foreign = {**orjson.loads(good[0]), "custom_id": "0" * 64}
    malformed = orjson.loads(good[2])
    malformed["custom_id"] = asked[2]["custom_id"]
    malformed["response"]["body"] = {"choices": []}
    bad = [good[0], good[0], orjson.dumps(error), orjson.dumps(failed), orjson.dumps(foreign),
           orjson.dumps(malformed), good[2][: len(good[2]) // 2], b"[1, 2]", b'{"response": {}}']
    (tmp_path / "bad.jsonl").write_bytes(b"\n".join(bad) + b"\n")
    second = run_cli(*common, "--batch-in", tmp_path / "bad.jsonl", "--batch-out", tmp_path / "r2.jsonl")
    assert second.returncode == 0 and "Traceback" not in second.stderr, second.stderr
    err = second.stderr
    assert "9 lines read, 1 answers stored" in err
    for number, reason in [(2, "duplicate custom_id"), (3, "error line, left pending"), (4, "status 500"),
                           (5, "foreign custom_id"), (6, "not a chat completion"), (7, "not JSON"),
                           (8, "not a JSON object"), (9, "no custom_id")]:
        assert f"bad.jsonl:{number}: {reason}" in err, (number, err)
    # The one usable answer is kept; the two requests whose lines were bad are asked again.
    again = {r["custom_id"] for r in lines(tmp_path / "r2.jsonl")}
    assert asked[0]["custom_id"] not in again
    assert {asked[1]["custom_id"], asked[2]["custom_id"]} <= again
    cache = RequestCache(tmp_path / "c.sqlite")
    try:
        assert cache.get_batch_answer(asked[0]["custom_id"]) is not None
        assert cache.get_batch_answer(asked[1]["custom_id"]) is None
        assert cache.get_batch_answer("0" * 64) is None
    finally:
        cache.close()
    # A good file for the rest finishes the round: the file is matched by custom_id, in any order.
    (tmp_path / "rest.jsonl").write_bytes(b"\n".join([good[2], good[1]]) + b"\n")
    third = run_cli(*common, "--batch-in", tmp_path / "rest.jsonl", "--batch-out", tmp_path / "r3.jsonl")
    assert third.returncode == 0, third.stderr
    assert "2 answers stored" in third.stderr


def test_batch_run_reports_bad_request_lines_and_answers_the_rest(tmp_path: Path):
    from convdistill.models import init_student

    folder = init_student("llama", "tiny", tmp_path / "tiny").path
    ok = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
          "body": {"model": "x", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}}
    refused = {**ok, "custom_id": "b", "body": {**ok["body"], "max_tokens": 0}}
    scored = {"custom_id": "c", "method": "POST", "url": "/v1/completions",
              "body": {"prompt": "Hello", "max_tokens": 1, "echo": True, "logprobs": 2}}
    elsewhere = {**ok, "url": "/v1/embeddings", "custom_id": "d"}
    lines_in = [orjson.dumps(ok), orjson.dumps(refused), orjson.dumps(elsewhere), orjson.dumps(ok),
                b'{"custom_id": "e", "method": "POST"', orjson.dumps(scored)]
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(lines_in) + b"\n")
    done = run_cli("teacher", "batch", "run", tmp_path / "in.jsonl", tmp_path / "out.jsonl", "--model", folder)
    assert done.returncode == 0, done.stderr
    assert "6 lines read, 3 requests run" in done.stderr
    assert "in.jsonl:3: unsupported url" in done.stderr and "in.jsonl:4: duplicate custom_id" in done.stderr
    assert "in.jsonl:5: not JSON" in done.stderr
    out = lines(tmp_path / "out.jsonl")
    assert [o["custom_id"] for o in out] == ["a", "b", "c"]
    assert [o["response"]["status_code"] for o in out] == [200, 400, 200]
    assert out[1]["response"]["body"]["error"]["param"] == "max_tokens"
    assert len(out[2]["response"]["body"]["choices"][0]["logprobs"]["token_logprobs"]) == 2
