"""Property-based tests: round trips, conservation of counts, disjoint splits."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convdistill.conversation_trees import (
    Selection,
    TreeReader,
    export_paths,
    read_trees,
    split_of,
    tree_paths,
    write_trees,
)
from convdistill.conversation_trees.writers import tree_to_messages, tree_to_nested

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

texts = st.text(min_size=1, max_size=30)
optional_fields = st.fixed_dictionaries(
    {},
    optional={
        "lang": st.sampled_from(["en", "de", "pt-BR", "es"]),
        "deleted": st.booleans(),
        "synthetic": st.booleans(),
        "review_result": st.booleans(),
        "review_count": st.integers(0, 5),
        "model_name": st.sampled_from(["teacher-a", "chip20b"]),
        "emojis": st.dictionaries(
            st.sampled_from(["+1", "-1", "_skip_reply"]), st.integers(0, 9), max_size=3
        ),
        "labels": st.dictionaries(
            st.sampled_from(["quality", "toxicity", "humor"]),
            st.fixed_dictionaries({"value": st.floats(0, 1), "count": st.integers(1, 5)}),
            max_size=3,
        ),
        "created_date": st.just("2023-02-05T10:00:00+00:00"),
        "future_field": st.integers(-(2**63), 2**63 - 1),  # unknown keys survive round trips
    },
)


@st.composite
def export_trees(draw, tree_index: int = 0) -> dict:
    """A valid nested export tree: alternating roles, ranks among assistant siblings."""
    n = draw(st.integers(1, 14))
    parents = [None] + [draw(st.integers(0, i - 1)) for i in range(1, n)]
    messages = []
    for i, parent in enumerate(parents):
        depth = 0 if parent is None else messages[parent]["_depth"] + 1
        m = {
            "message_id": f"t{tree_index}-m{i}",
            "text": draw(texts),
            "role": "prompter" if depth % 2 == 0 else "assistant",
            "_depth": depth,
            **draw(optional_fields),
        }
        if parent is not None:
            m["parent_id"] = messages[parent]["message_id"]
        m["replies"] = []
        messages.append(m)
        if parent is not None:
            messages[parent]["replies"].append(m)
    for m in messages:
        kids = [k for k in m["replies"] if k["role"] == "assistant"]
        if len(kids) > 1 and draw(st.booleans()):
            for rank, k in enumerate(draw(st.permutations(kids))):
                k["rank"] = rank
    for m in messages:
        del m["_depth"]
    state = draw(st.sampled_from(["ready_for_export", "ready_for_export", "growing"]))
    return {
        "message_tree_id": messages[0]["message_id"],
        "tree_state": state,
        "prompt": messages[0],
    }


@st.composite
def export_files(draw) -> list[dict]:
    count = draw(st.integers(1, 6))
    return [draw(export_trees(tree_index=i)) for i in range(count)]


@SETTINGS
@given(trees=export_files(), fmt=st.sampled_from(["trees", "messages"]), gz=st.booleans())
def test_round_trip(trees, fmt, gz):
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.jsonl"
        src.write_bytes(b"".join(orjson.dumps(t) + b"\n" for t in trees))
        first = read_trees(src, on_error="fail")
        out = Path(tmp) / ("out.jsonl.gz" if gz else "out.jsonl")
        write_trees(out, first, fmt)
        second = read_trees(out, on_error="fail")
        assert [tree_to_nested(g) for g in second] == [tree_to_nested(g) for g in first] == trees
        # Paths do not depend on the format the trees came from.
        sel = Selection(tree_states=())
        assert [p.message_ids for g in second for p in tree_paths(g, sel)] == [
            p.message_ids for g in first for p in tree_paths(g, sel)
        ]


CORRUPTIONS = [
    lambda t: b"{" + orjson.dumps(t)[:-5],  # cut off
    lambda t: orjson.dumps({**t, "prompt": {**t["prompt"], "text": 5}}),  # wrong type
    lambda t: orjson.dumps({**t, "prompt": {k: v for k, v in t["prompt"].items() if k != "role"}}),
    lambda t: orjson.dumps([t]),  # not an object
    lambda t: orjson.dumps({"nothing": "here"}),  # unknown object
]


@SETTINGS
@given(
    trees=export_files(),
    bad=st.lists(st.tuples(st.integers(0, 10), st.integers(0, len(CORRUPTIONS) - 1)), max_size=6),
)
def test_counts_are_conserved_and_valid_trees_kept(trees, bad):
    lines = [orjson.dumps(t) for t in trees]
    for position, kind in bad:
        lines.insert(min(position, len(lines)), CORRUPTIONS[kind](trees[0]))
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.jsonl"
        src.write_bytes(b"\n".join(lines) + b"\n")
        rejects = []
        reader = TreeReader(src, on_reject=rejects.append)
        kept = [tree_to_nested(g) for g in reader]
        report = reader.report
        assert report.records_read == len(lines) == report.records_kept + report.records_rejected
        assert report.records_rejected == len(bad) == len(rejects)
        assert kept == trees  # every valid tree, in file order
        assert report.messages_kept == sum(len(tree_to_messages(g)) for g in read_trees(src))


@SETTINGS
@given(trees=export_files(), fraction=st.floats(0.01, 0.9), seed=st.integers(0, 2**16))
def test_split_is_by_tree_and_disjoint(trees, fraction, seed):
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.jsonl"
        src.write_bytes(b"".join(orjson.dumps(t) + b"\n" for t in trees))
        sel = Selection(tree_states=())
        summary = export_paths(
            src, Path(tmp) / "p.jsonl", selection=sel, validation_fraction=fraction, seed=seed
        )
        sides = {}
        for side in ("train", "validation"):
            f = Path(tmp) / f"p.{side}.jsonl"
            sides[side] = (
                [orjson.loads(x) for x in f.read_bytes().splitlines()] if f.exists() else []
            )
        ids = {side: {r["tree_id"] for r in recs} for side, recs in sides.items()}
        assert ids["train"].isdisjoint(ids["validation"])
        for side, recs in sides.items():
            assert all(split_of(r["tree_id"], fraction, seed) == side for r in recs)
        total = sum(1 for g in read_trees(src) for _ in tree_paths(g, sel))
        assert (
            len(sides["train"]) + len(sides["validation"]) == total == sum(summary.written.values())
        )


def test_split_fraction_is_about_right():
    rng = random.Random(0)
    ids = [f"tree-{rng.random()}" for _ in range(20000)]
    share = sum(split_of(i, 0.1, seed=3) == "validation" for i in ids) / len(ids)
    assert 0.09 < share < 0.11


def test_a_first_line_that_is_an_array_is_one_rejected_record(tmp_path):
    """Found by the property above: JSON lines whose first record is an array were taken for one
    JSON document (ChatGPT's export is an array), losing the valid lines after it."""
    tree = {"message_tree_id": "t0", "tree_state": "ready_for_export",
            "prompt": {"message_id": "t0", "text": "0", "role": "prompter", "replies": []}}
    src = tmp_path / "in.jsonl"
    src.write_bytes(orjson.dumps([tree]) + b"\n" + orjson.dumps(tree) + b"\n")
    reader = TreeReader(src)
    assert len(list(reader)) == 1
    report = reader.report
    assert (report.records_read, report.records_kept, report.records_rejected) == (2, 1, 1)
