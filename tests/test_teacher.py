"""The teacher over real HTTP on 127.0.0.1: a fault-injecting server and our own server."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, SAMPLE, run_cli
from convdistill.conversation_trees import Selection, read_trees, tree_paths
from convdistill.conversation_trees.writers import tree_to_nested
from convdistill.teacher import (
    Budget,
    EndpointSettings,
    RunOptions,
    TeacherSettings,
    run_teacher,
)
from fault_server import FaultServer

PINNED = "2026-01-01T00:00:00+00:00"
MODEL = "fault-teacher"


@pytest.fixture(scope="module")
def small_export(tmp_path_factory) -> Path:
    """The sample's first 6 trees."""
    path = tmp_path_factory.mktemp("data") / "six.jsonl"
    path.write_bytes(b"".join(SAMPLE.read_bytes().splitlines(keepends=True)[:6]))
    return path


def _endpoint(server: FaultServer, **kw) -> EndpointSettings:
    return EndpointSettings(
        server.base_url,
        MODEL,
        "sk-test-SECRET",
        timeout_s=kw.pop("timeout_s", 1.0),
        backoff_base_s=0.01,
        backoff_max_s=0.2,
        **kw,
    )


def _run(server, src, out, cache, op="extend", **kw):
    settings = TeacherSettings(
        operation=op,
        turns=kw.pop("turns", 2),
        answers=kw.pop("answers", 1),
        strategy=kw.pop("strategy", "best"),
        selection=Selection(min_assistant_turns=0 if op != "rank" else 1),
    )
    options = RunOptions(
        cache_path=cache,
        created_date=kw.pop("created", PINNED),
        max_trees=kw.pop("max_trees", None),
    )
    return run_teacher(
        src,
        out,
        settings,
        _endpoint(server, **kw.pop("endpoint", {})),
        kw.pop("budget", None),
        options,
    )


def _messages(trees):
    return {mid: attrs for g in trees for mid, attrs in g.nodes(data=True)}


def test_extend_keeps_every_original_and_adds_synthetic_turns(tmp_path, small_export):
    with FaultServer() as server:
        report = _run(server, small_export, tmp_path / "ext.jsonl", tmp_path / "cache.sqlite")
    before, after = read_trees(small_export), read_trees(tmp_path / "ext.jsonl", on_error="fail")
    old, new = _messages(before), _messages(after)
    assert all(new[mid] == attrs for mid, attrs in old.items())  # every original message as it was
    added = {mid: attrs for mid, attrs in new.items() if mid not in old}
    assert added and all(a["synthetic"] is True and a["model_name"] == MODEL for a in added.values())
    assert all(a["created_date"] == PINNED for a in added.values())
    assert report.operation.exchanges_added == len([a for a in added.values() if a["role"] == "prompter"])
    # Paths got longer: the best path of each tree now has more assistant turns.
    turns = [max(p.assistant_turns for p in tree_paths(g, Selection(), "all")) for g in before]
    turns_after = [max(p.assistant_turns for p in tree_paths(g, Selection(), "all")) for g in after]
    assert all(b >= a for a, b in zip(turns, turns_after, strict=True)) and sum(turns_after) > sum(turns)
    # The new nodes hang under the best path's end, and roles still alternate (reader checked).
    assert len(after) == len(before)


def test_faults_give_the_same_output_and_the_rerun_sends_nothing(tmp_path, small_export):
    with FaultServer() as clean:
        _run(clean, small_export, tmp_path / "clean.jsonl", tmp_path / "clean.sqlite")
    with FaultServer(fault_rate=0.2, seed=3, slow_s=1.5) as faulty:
        report = _run(
            faulty,
            small_export,
            tmp_path / "faulty.jsonl",
            tmp_path / "faulty.sqlite",
            endpoint={"timeout_s": 0.5},
        )
        assert sum(faulty.fault_counts.values()) >= 3, faulty.fault_counts
        assert report.usage.retries >= sum(faulty.fault_counts.values()) - 1
        assert report.usage.failed_requests == 0
        sent = faulty.requests
        again = _run(faulty, small_export, tmp_path / "again.jsonl", tmp_path / "faulty.sqlite")
        assert faulty.requests == sent and again.usage.requests_sent == 0  # all from the cache
    clean_bytes = (tmp_path / "clean.jsonl").read_bytes()
    assert (tmp_path / "faulty.jsonl").read_bytes() == clean_bytes
    assert (tmp_path / "again.jsonl").read_bytes() == clean_bytes


def test_regenerate_and_rank(tmp_path, small_export):
    with FaultServer() as server:
        _run(server, small_export, tmp_path / "ext.jsonl", tmp_path / "c.sqlite", turns=1)
        regen = _run(
            server,
            tmp_path / "ext.jsonl",
            tmp_path / "regen.jsonl",
            tmp_path / "c.sqlite",
            op="regenerate",
            answers=1,
        )
        ranked = _run(
            server,
            tmp_path / "regen.jsonl",
            tmp_path / "ranked.jsonl",
            tmp_path / "c.sqlite",
            op="rank",
        )
    ext, regen_trees = (
        _messages(read_trees(tmp_path / "ext.jsonl")),
        read_trees(tmp_path / "regen.jsonl"),
    )
    new = {m: a for m, a in _messages(regen_trees).items() if m not in ext}
    assert new and all(a["role"] == "assistant" and a["synthetic"] for a in new.values())
    assert regen.operation.messages_added["assistant"] == len(new)
    # Each regenerated answer is a sibling of an existing answer to the same user turn.
    for g in regen_trees:
        for mid in set(g) & set(new):
            parent = next(iter(g.predecessors(mid)))
            assert len(list(g.successors(parent))) >= 2
    # Teacher-extended user turns now have two unranked answers: rank gives them ranks.
    assert ranked.operation.groups_ranked > 0
    ranked_nodes = [a for a in _messages(read_trees(tmp_path / "ranked.jsonl")).values() if a.get("ranked_by")]
    assert ranked_nodes and all(a["ranked_by"] == MODEL and isinstance(a["rank"], int) for a in ranked_nodes)
    pairs = run_cli("pairs", "export", tmp_path / "ranked.jsonl", "-o", tmp_path / "pairs.jsonl")
    before = run_cli("pairs", "export", small_export, "-o", tmp_path / "pairs0.jsonl")
    assert pairs.returncode == 0 and before.returncode == 0
    assert len((tmp_path / "pairs.jsonl").read_bytes().splitlines()) > len(
        (tmp_path / "pairs0.jsonl").read_bytes().splitlines()
    )


def test_budget_stops_cleanly_and_a_rerun_goes_on(tmp_path, small_export):
    with FaultServer() as server:
        first = _run(
            server,
            small_export,
            tmp_path / "part.jsonl",
            tmp_path / "c.sqlite",
            budget=Budget(max_requests=5),
        )
        assert first.operation.stopped_by_budget and first.usage.requests_sent == 5
        partial = read_trees(tmp_path / "part.jsonl", on_error="fail")  # a valid export
        assert len(partial) == 6
        full = _run(server, small_export, tmp_path / "full.jsonl", tmp_path / "c.sqlite")
        assert full.usage.cache_hits >= 4
        _run(server, small_export, tmp_path / "ref.jsonl", tmp_path / "ref.sqlite")
    assert (tmp_path / "full.jsonl").read_bytes() == (tmp_path / "ref.jsonl").read_bytes()


def test_cli_dry_run_secret_never_written_and_fatal_errors(tmp_path, small_export):
    env = {**os.environ, "OPENAI_API_KEY": "sk-very-secret-123", "COLUMNS": "150"}
    with FaultServer() as server:
        cmd = [
            sys.executable,
            "-m",
            "convdistill.cli.main",
            "extend",
            str(small_export),
            "-o",
            str(tmp_path / "o.jsonl"),
            "--base-url",
            server.base_url,
            "--model",
            MODEL,
            "--cache",
            str(tmp_path / "c.sqlite"),
            "--turns",
            "1",
        ]
        dry = subprocess.run([*cmd, "--dry-run"], capture_output=True, text=True, env=env, timeout=120)
        assert dry.returncode == 0 and "dry run: 6 trees" in dry.stderr and server.requests == 0
        real = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        assert real.returncode == 0, real.stderr
        assert "requests:" in real.stderr and server.requests > 0
        for blob in (
            (tmp_path / "o.jsonl").read_bytes(),
            (tmp_path / "c.sqlite").read_bytes(),
            real.stderr.encode(),
        ):
            assert b"sk-very-secret-123" not in blob
        wrong = subprocess.run(
            [
                *cmd[:-6],
                "--base-url",
                server.base_url.replace("/v1", "/nope"),
                "--model",
                MODEL,
                "--no-cache",
                "-o",
                str(tmp_path / "x.jsonl"),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert wrong.returncode == 1 and "404" in wrong.stderr and "Traceback" not in wrong.stderr


def test_kill_9_and_resume_give_the_uninterrupted_output(tmp_path, small_export):
    env = {**os.environ, "COLUMNS": "150"}
    rng = random.Random(11)
    with FaultServer(delay_s=0.05) as server:

        def command(out: Path, cache: Path) -> list[str]:
            return [
                sys.executable,
                "-m",
                "convdistill.cli.main",
                "extend",
                str(small_export),
                "-o",
                str(out),
                "--base-url",
                server.base_url,
                "--model",
                MODEL,
                "--cache",
                str(cache),
                "--turns",
                "3",
                "--strategy",
                "all",
                "--created-date",
                PINNED,
                "--concurrency",
                "4",
            ]

        started = time.monotonic()
        reference = subprocess.run(
            command(tmp_path / "ref.jsonl", tmp_path / "ref.sqlite"),
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert reference.returncode == 0, reference.stderr
        reference_wall = time.monotonic() - started
        total = sum(server.answered.values())
        server.answered.clear()

        out, cache = tmp_path / "out.jsonl", tmp_path / "resume.sqlite"

        def cached_keys() -> set[str]:
            if not cache.exists():
                return set()
            with sqlite3.connect(cache) as db:
                return {k for (k,) in db.execute("SELECT key FROM answers")}

        kills, sent_again = 0, 0
        for run in range(5):
            done_before = cached_keys()
            server.answered.clear()
            proc = subprocess.Popen(
                command(out, cache),
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                cwd=ROOT,
            )
            if run < 4:
                # Somewhere inside a whole run's time (start-up included): a resumed run has less
                # left to do, so later kills may come after it finished, which is fine.
                time.sleep(rng.uniform(0.3, 0.8) * reference_wall)
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    kills += 1
            _, err = proc.communicate(timeout=300)
            # No request whose answer was already recorded is ever sent again.
            assert not (set(server.answered) & done_before)
            sent_again += sum(server.answered.values())
        assert proc.returncode == 0, err
    assert kills >= 1
    assert out.read_bytes() == (tmp_path / "ref.jsonl").read_bytes()
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []
    # Answers in flight at a kill (at most --concurrency of them) may be lost and asked again.
    assert sent_again <= total + kills * 4


@pytest.mark.slow
def test_extend_against_our_own_server_with_a_tiny_model(tmp_path, small_export):
    from convdistill.models import init_student
    from convdistill.serve import BackgroundServer, ChatModel

    folder = init_student("llama", "tiny", tmp_path / "tiny").path
    with BackgroundServer(ChatModel(folder, "tiny-llama")) as server:
        settings = TeacherSettings(
            turns=1,
            max_tokens=16,
            simulator_max_tokens=16,
            selection=Selection(min_assistant_turns=0),
        )
        endpoint = EndpointSettings(server.base_url, "tiny-llama", timeout_s=60, max_retries=2, backoff_base_s=0.01)
        report = run_teacher(
            small_export,
            tmp_path / "ext.jsonl",
            settings,
            endpoint,
            options=RunOptions(cache_path=tmp_path / "c.sqlite", max_trees=2),
        )
    trees = read_trees(tmp_path / "ext.jsonl", on_error="fail")
    assert len(trees) == 6
    added = [a for g in trees for _, a in g.nodes(data=True) if a.get("model_name") == "tiny-llama"]
    assert report.usage.answers_received > 0
    assert len(added) == sum(report.operation.messages_added.values())
    # Written and read back with every check on: roles alternate, ids unique, parents known.
    assert all(tree_to_nested(g)["prompt"]["replies"] for g in trees)


def test_simulator_and_ranking_parsers_on_messy_outputs():
    from convdistill.teacher.ranking import parse_ranking
    from convdistill.teacher.simulator import END_MARKER, clean_user_turn

    assert clean_user_turn("User: Can you give an example?\nAssistant: Sure, ...") == "Can you give an example?"
    assert clean_user_turn('  "Thanks, that helps."  ') == "Thanks, that helps."
    assert clean_user_turn("[END]") == END_MARKER and clean_user_turn("[end].") == END_MARKER
    assert clean_user_turn("Here's the user's next message:") is None
    assert clean_user_turn("Here is my message:\nWhat about Rust?") == "What about Rust?"
    assert clean_user_turn("Assistant: I think") is None and clean_user_turn("   ") is None
    assert parse_ranking("Ranking: 2 > 3 > 1", 3) == [1, 2, 0]
    assert parse_ranking("The best is candidate 3, then 1, then 2.", 3) == [2, 0, 1]
    assert parse_ranking("2 > 1", 3) is None and parse_ranking("7 > 9", 2) is None


def test_open_ends_keep_unanswered_turns():
    from conftest import msg, tree
    from convdistill.conversation_trees.tree_graph import tree_from_nested

    g = tree_from_nested(
        tree(
            msg(
                "prompter",
                message_id="q",
                replies=[msg("assistant", message_id="a", replies=[msg("prompter", message_id="q2")])],
            )
        )
    )
    lone = tree_from_nested(tree(msg("prompter", message_id="only")))
    sel = Selection(min_assistant_turns=0)
    assert [p.message_ids for p in tree_paths(g, sel, "best", open_ends=True)] == [("q", "a", "q2")]
    assert [p.message_ids for p in tree_paths(g, sel, "best")] == [("q", "a")]
    assert [p.message_ids for p in tree_paths(lone, sel, "all", open_ends=True)] == [("only",)]
    assert list(tree_paths(lone, sel, "all")) == []


def test_a_cached_answer_that_fails_a_stricter_check_is_asked_again(tmp_path):
    import asyncio

    from convdistill.teacher.client import ChatRequest, TeacherClient
    from convdistill.teacher.request_cache import CachedAnswer, RequestCache, request_key

    request = ChatRequest((("user", "hello"),), purpose="simulator")
    cache = RequestCache(tmp_path / "c.sqlite")
    cache.put(request_key(request.payload(MODEL)), MODEL, CachedAnswer("Here's your next message:", 5, 5, PINNED))

    async def ask(server):
        async with TeacherClient(_endpoint(server), cache) as client:
            answer = await client.complete(request, validate=clean_user_turn_for_test)
            return answer, client.usage

    with FaultServer() as server:
        answer, usage = asyncio.run(ask(server))
        assert usage.requests_sent == 1 and not answer.cached and answer.text.startswith("Teacher answer")
        answer, usage = asyncio.run(ask(server))  # now the good answer is cached
        assert usage.requests_sent == 0 and answer.cached
    cache.close()


def clean_user_turn_for_test(text: str) -> str | None:
    from convdistill.teacher.simulator import clean_user_turn

    return clean_user_turn(text)
