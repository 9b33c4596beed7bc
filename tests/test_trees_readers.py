"""Reading, checking and writing exports: both formats, gzip, rejects and their counts."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import orjson
import pytest

from conftest import msg, run_cli, tree, write_jsonl
from convdistill.conversation_trees import InputError, TreeReader, read_trees, write_trees
from convdistill.conversation_trees.writers import tree_to_messages, tree_to_nested


def test_sample_reads_with_every_field_kept(sample_path, sample_trees):
    reader = TreeReader(sample_path)
    trees = list(reader)
    assert reader.report.format == "trees"
    assert (
        reader.report.records_read,
        reader.report.records_kept,
        reader.report.records_rejected,
    ) == (100, 100, 0)
    assert reader.report.messages_kept == 1167
    # Writing back gives the exact objects of the file, field for field, reply order included.
    assert [tree_to_nested(g) for g in trees] == sample_trees


@pytest.mark.parametrize("fmt", ["trees", "messages"])
@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_round_trip_both_formats(tmp_path, sample_path, fmt, suffix):
    trees = read_trees(sample_path)
    out = tmp_path / f"export{suffix}"
    write_trees(out, trees, fmt)
    if suffix.endswith(".gz"):
        assert out.read_bytes()[:2] == b"\x1f\x8b"
    again = TreeReader(out)
    back = list(again)
    assert again.report.format == fmt
    assert [tree_to_nested(g) for g in back] == [tree_to_nested(g) for g in trees]


def test_gzip_is_detected_by_content_not_name(tmp_path, sample_path):
    disguised = tmp_path / "export.jsonl"  # gzipped bytes under a plain name
    disguised.write_bytes(gzip.compress(sample_path.read_bytes()))
    assert len(read_trees(disguised)) == 100


def test_shuffled_flat_file_rebuilds_the_same_trees(tmp_path, sample_path):
    trees = read_trees(sample_path)
    rows = [row for g in trees for row in tree_to_messages(g)]
    # Real exports carry created_date; give each message one in export order, then shuffle.
    for i, row in enumerate(rows):
        row["created_date"] = f"2023-02-01T00:00:{i // 60:02d}.{i % 60:06d}+00:00"
    random.Random(7).shuffle(rows)
    flat = write_jsonl(tmp_path / "messages.jsonl", rows)
    rebuilt = {g.graph["message_tree_id"]: tree_to_nested(g) for g in read_trees(flat)}
    for g in trees:
        expected = tree_to_nested(g)
        got = rebuilt[g.graph["message_tree_id"]]
        assert _strip_dates(got) == expected


def _strip_dates(obj):
    stack = [obj["prompt"]]
    while stack:
        m = stack.pop()
        m.pop("created_date", None)
        stack.extend(m["replies"])
    return obj


def _good_tree() -> dict:
    return tree(msg("prompter", replies=[msg("assistant", rank=0), msg("assistant", rank=1)]))


def _with_wrong_parent() -> dict:
    obj = tree(msg("prompter", replies=[msg("assistant")]))
    obj["prompt"]["replies"][0]["parent_id"] = "elsewhere"
    return obj


BAD_NESTED = {
    "malformed_json": b'{"message_tree_id": "x", "prompt": {',
    "unknown_object": b'{"hello": "world"}',
    "not_an_object": b"[1, 2, 3]",
    "missing_text": orjson.dumps(tree({"message_id": "r1", "role": "prompter", "replies": []})),
    "rank_not_int": orjson.dumps(tree(msg("prompter", replies=[msg("assistant", rank="first")]))),
    "rank_bool": orjson.dumps(tree(msg("prompter", replies=[msg("assistant", rank=True)]))),
    "duplicate_id": orjson.dumps(
        tree(
            msg(
                "prompter",
                message_id="d0",
                replies=[msg("assistant", message_id="d1"), msg("assistant", message_id="d1")],
            )
        )
    ),
    "roles": orjson.dumps(tree(msg("prompter", replies=[msg("prompter")]))),
    "bad_role": orjson.dumps(tree(msg("prompter", replies=[msg("robot")]))),
    "parent_mismatch": orjson.dumps(_with_wrong_parent()),
}


def test_every_bad_line_is_reported_and_every_good_tree_kept(tmp_path):
    good = [_good_tree() for _ in range(5)]
    lines = [orjson.dumps(good[0]), *BAD_NESTED.values(), *(orjson.dumps(g) for g in good[1:])]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    rejects = []
    reader = TreeReader(path, on_reject=rejects.append)
    kept = list(reader)
    assert [g.graph["message_tree_id"] for g in kept] == [g["message_tree_id"] for g in good]
    report = reader.report
    assert report.records_read == len(lines)
    assert report.records_kept == 5 and report.records_rejected == len(BAD_NESTED)
    assert report.balanced
    assert [r.line for r in rejects] == list(range(2, 2 + len(BAD_NESTED)))
    kinds = [r.kind for r in rejects]
    assert kinds[:3] == ["malformed_json", "unknown_object", "unknown_object"]
    assert kinds[3:6] == ["schema"] * 3 and "'rank' must be an integer" in rejects[4].reason
    assert kinds[6:8] == ["duplicate_id", "roles"]
    assert "parent_id" in rejects[-1].reason


def test_fail_mode_stops_at_first_bad_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(orjson.dumps(_good_tree()) + b"\n" + BAD_NESTED["rank_not_int"] + b"\n")
    with pytest.raises(InputError) as err:
        list(TreeReader(path, on_error="fail"))
    assert f"{path}:2" in str(err.value) and "rank" in str(err.value)


def test_flat_orphans_cycles_and_duplicates(tmp_path):
    rows = [
        {"message_id": "a", "role": "prompter", "text": "hi", "message_tree_id": "a"},
        {
            "message_id": "b",
            "parent_id": "a",
            "role": "assistant",
            "text": "hello",
            "message_tree_id": "a",
        },
        {
            "message_id": "b",
            "parent_id": "a",
            "role": "assistant",
            "text": "dup",
            "message_tree_id": "a",
        },
        {"message_id": "o", "parent_id": "missing", "role": "assistant", "text": "lost"},
        {"message_id": "o2", "parent_id": "o", "role": "prompter", "text": "lost too"},
        {"message_id": "c1", "parent_id": "c2", "role": "prompter", "text": "x"},
        {"message_id": "c2", "parent_id": "c1", "role": "assistant", "text": "y"},
        {"message_id": "t", "role": "prompter"},  # no text
    ]
    path = write_jsonl(tmp_path / "flat.jsonl", rows)
    rejects = []
    reader = TreeReader(path, on_reject=rejects.append)
    kept = list(reader)
    assert len(kept) == 1 and set(kept[0].nodes) == {"a", "b"}
    r = reader.report
    assert (r.records_read, r.records_kept, r.records_rejected) == (8, 2, 6)
    by_line = {x.line: x.kind for x in rejects}
    assert by_line == {
        3: "duplicate_id",
        4: "orphan",
        5: "orphan",
        6: "cycle",
        7: "cycle",
        8: "schema",
    }


def test_a_tree_450_levels_deep(tmp_path):
    # Built iteratively: the reader, writer and strategies must not recurse either.
    root = node = msg("prompter")
    for depth in range(1, 450):
        child = msg("assistant" if depth % 2 else "prompter")
        child["parent_id"] = node["message_id"]
        node["replies"] = [child]
        node = child
    path = tmp_path / "deep.jsonl"
    path.write_text(_dump_deep(tree(root)) + "\n")
    trees = read_trees(path, on_error="fail")
    assert trees[0].number_of_nodes() == 450
    for fmt in ("trees", "messages"):
        write_trees(tmp_path / f"deep_{fmt}.jsonl", trees, fmt)
        again = read_trees(tmp_path / f"deep_{fmt}.jsonl", on_error="fail")
        assert tree_to_nested(again[0]) == tree_to_nested(trees[0])
    out = tmp_path / "deep_out.jsonl"
    result = run_cli("paths", "export", path, "-o", out, "--on-error", "fail")
    assert result.returncode == 0, result.stderr
    record = orjson.loads(out.read_bytes().splitlines()[0])
    assert len(record["messages"]) == 450


def test_nesting_too_deep_is_a_reject_not_a_crash(tmp_path):
    root = node = msg("prompter")
    for depth in range(1, 700):
        child = msg("assistant" if depth % 2 else "prompter")
        node["replies"] = [child]
        node = child
    path = tmp_path / "too_deep.jsonl"
    # orjson refuses to write it too: the stdlib writer, with a raised recursion limit, can.
    path.write_text(_dump_deep(tree(root)) + "\n" + orjson.dumps(_good_tree()).decode() + "\n")
    rejects = []
    reader = TreeReader(path, on_reject=rejects.append)
    assert len(list(reader)) == 1
    assert rejects[0].kind == "too_deep" and rejects[0].line == 1


def _dump_deep(obj) -> str:
    import json
    import sys

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10_000)
    try:
        return json.dumps(obj)
    finally:
        sys.setrecursionlimit(limit)


def test_cli_bad_input_exit_codes_without_traceback(tmp_path):
    good = [orjson.dumps(_good_tree()) for _ in range(3)]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(
        b"\n".join([good[0], b"{not json", good[1], BAD_NESTED["rank_not_int"], good[2]]) + b"\n"
    )
    rejects = tmp_path / "rejects.jsonl"
    skip = run_cli("paths", "export", path, "-o", tmp_path / "out.jsonl", "--rejects", rejects)
    assert skip.returncode == 0, skip.stderr
    assert "Traceback" not in skip.stderr
    assert "read 5 tree lines, kept 3, rejected 2" in skip.stderr
    logged = [orjson.loads(line) for line in rejects.read_bytes().splitlines()]
    assert [(r["line"], r["kind"]) for r in logged] == [(2, "malformed_json"), (4, "schema")]
    assert all(r["file"] == str(path) for r in logged)
    assert len((tmp_path / "out.jsonl").read_bytes().splitlines()) == 6  # 2 paths per good tree

    fail = run_cli("paths", "export", path, "-o", tmp_path / "out2.jsonl", "--on-error", "fail")
    assert fail.returncode == 1
    assert "Traceback" not in fail.stderr
    assert f"{path}:2" in fail.stderr

    usage = run_cli("paths", "export", tmp_path / "nope.jsonl", "-o", tmp_path / "x.jsonl")
    assert usage.returncode == 2
    assert "Traceback" not in usage.stderr


def test_empty_and_blank_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"\n\n")
    reader = TreeReader(empty)
    assert list(reader) == [] and reader.report.records_read == 0


def test_truncated_gzip_keeps_what_was_read(tmp_path, sample_path):
    data = gzip.compress(sample_path.read_bytes())
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    rejects = []
    reader = TreeReader(path, on_reject=rejects.append)
    trees = list(reader)
    assert 0 < len(trees) < 100
    assert rejects and rejects[-1].kind in ("unreadable", "malformed_json")
    assert reader.report.balanced


def test_writer_output_reads_back_with_other_tools(tmp_path: Path, sample_path):
    # Flat rows carry the tree fields, as Open-Assistant's flat exports do.
    out = tmp_path / "flat.jsonl"
    write_trees(out, read_trees(sample_path), "messages")
    first = orjson.loads(out.read_bytes().splitlines()[0])
    assert first["message_tree_id"] and first["tree_state"] == "ready_for_export"
    assert "replies" not in first


def test_tree_graph_holds_every_message_in_export_order(sample_path):
    import networkx as nx

    raw = [orjson.loads(line) for line in sample_path.read_bytes().splitlines()[:20]]
    for obj, g in zip(raw, read_trees(sample_path)[:20], strict=True):
        assert nx.is_arborescence(g) and g.graph["root"] == obj["prompt"]["message_id"]
        stack = [obj["prompt"]]
        while stack:
            msg = stack.pop()
            replies = msg.get("replies") or []
            # every field but `replies`, and the replies as successors in the file's order
            assert g.nodes[msg["message_id"]] == {k: v for k, v in msg.items() if k != "replies"}
            assert list(g.successors(msg["message_id"])) == [r["message_id"] for r in replies]
            stack.extend(replies)


def test_cached_type_check_still_catches_a_bad_role_and_emojis(tmp_path):
    good = _good_tree()
    bad_role = _good_tree()
    bad_role["prompt"]["replies"][0]["role"] = "robot"  # same field types as a good message
    bad_emoji = _good_tree()
    bad_emoji["prompt"]["emojis"] = {"+1": "many"}
    good["prompt"]["emojis"] = {"+1": 2}
    path = write_jsonl(tmp_path / "t.jsonl", [good, bad_role, bad_emoji])
    rejects = []
    assert len(read_trees(path, on_reject=rejects.append)) == 1
    assert ["role" in rejects[0].reason, "emojis" in rejects[1].reason] == [True, True]
