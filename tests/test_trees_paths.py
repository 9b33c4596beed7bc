"""Path strategies, filters, scores, pairs and Open-Assistant compatibility."""

from __future__ import annotations

import gzip
import random

import datasets
import orjson
import pyarrow.parquet as pq
import pytest

from conftest import SHARED_SAMPLE, msg, run_cli, tree, write_jsonl
from convdistill.conversation_trees import (
    PathSampler,
    ScoreWeights,
    Selection,
    export_pairs,
    export_paths,
    read_trees,
    tree_pairs,
    tree_paths,
    write_trees,
)
from convdistill.conversation_trees.tree_graph import tree_from_nested
from convdistill.conversation_trees.writers import tree_to_messages


def _branchy():
    """p0 -> a_best(rank 0) -> p1 -> a1
                         -> p2 (leaf)
    -> a_mid(rank 1)  -> p3 (leaf)
    -> a_bad(rank 2, deleted) -> p4 -> a4
    """
    return tree(
        msg(
            "prompter",
            "p0",
            message_id="p0",
            lang="pt-BR",
            replies=[
                msg(
                    "assistant",
                    "a_mid",
                    message_id="a_mid",
                    rank=1,
                    replies=[msg("prompter", message_id="p3")],
                ),
                msg(
                    "assistant",
                    "a_best",
                    message_id="a_best",
                    rank=0,
                    labels={"quality": {"value": 0.9, "count": 3}},
                    replies=[
                        msg(
                            "prompter",
                            message_id="p1",
                            replies=[
                                msg("assistant", message_id="a1", synthetic=True, model_name="t")
                            ],
                        ),
                        msg("prompter", message_id="p2"),
                    ],
                ),
                msg(
                    "assistant",
                    "a_bad",
                    message_id="a_bad",
                    rank=2,
                    deleted=True,
                    replies=[
                        msg(
                            "prompter", message_id="p4", replies=[msg("assistant", message_id="a4")]
                        )
                    ],
                ),
            ],
        )
    )


def _ids(paths):
    return [p.message_ids for p in paths]


def test_all_paths_ranked_trimmed_without_duplicates():
    g = tree_from_nested(_branchy())
    paths = list(tree_paths(g, Selection(), "all"))
    # Best branch first; the deleted branch and its subtree are gone; p2 and p3 trimmed.
    assert _ids(paths) == [("p0", "a_best", "p1", "a1"), ("p0", "a_best"), ("p0", "a_mid")]
    assert [p.assistant_turns for p in paths] == [2, 1, 1]


def test_best_top_k_and_filters():
    g = tree_from_nested(_branchy())
    assert _ids(tree_paths(g, Selection(), "best")) == [("p0", "a_best", "p1", "a1")]
    assert _ids(tree_paths(g, Selection(top_k=1), "top-k")) == [
        ("p0", "a_best", "p1", "a1"),
        ("p0", "a_best"),
    ]
    assert _ids(tree_paths(g, Selection(drop_synthetic=True), "all")) == [
        ("p0", "a_best"),
        ("p0", "a_mid"),
    ]
    assert _ids(tree_paths(g, Selection(min_assistant_turns=2), "all")) == [
        ("p0", "a_best", "p1", "a1")
    ]
    assert _ids(tree_paths(g, Selection(max_assistant_turns=1), "all")) == [
        ("p0", "a_best"),
        ("p0", "a_mid"),
    ]
    # a1 and a_mid have no quality label: only the path whose every assistant has one is left.
    assert _ids(tree_paths(g, Selection(min_labels={"quality": 0.5}), "all")) == [("p0", "a_best")]
    assert _ids(tree_paths(g, Selection(max_labels={"quality": 0.5}), "all")) == [("p0", "a_mid")]
    assert list(tree_paths(g, Selection(tree_states=("growing",)), "all")) == []
    with pytest.raises(ValueError, match="top-k"):
        list(tree_paths(g, Selection(), "top-k"))


@pytest.mark.parametrize(
    ("wanted", "kept"),
    [
        (("pt",), True),
        (("PT-br",), True),
        (("pt_BR",), True),
        (("p",), False),
        (("en", "pt"), True),
        (("en",), False),
    ],
)
def test_language_prefix_matching(wanted, kept):
    g = tree_from_nested(_branchy())
    assert bool(list(tree_paths(g, Selection(langs=wanted), "all"))) is kept


def test_scores_from_ranks_labels_and_emojis():
    g = tree_from_nested(_branchy())
    scores = {p.message_ids: p.score for p in tree_paths(g, Selection(), "all")}
    # 3 ranked siblings: rank 0 -> 1.0, rank 1 -> 0.5; only children score 1.0.
    assert scores[("p0", "a_best")] == 1.0
    assert scores[("p0", "a_mid")] == 0.5
    assert scores[("p0", "a_best", "p1", "a1")] == 1.0
    weighted = {
        p.message_ids: p.score
        for p in tree_paths(g, Selection(), "all", ScoreWeights(labels={"quality": 1.0}))
    }
    assert weighted[("p0", "a_best")] == pytest.approx(1.9)


def test_pairs_by_pairing():
    t = tree(
        msg(
            "prompter",
            message_id="q",
            replies=[msg("assistant", message_id=f"r{i}", rank=i) for i in (2, 0, 3, 1)]
            + [msg("assistant", message_id="unranked")],
        )
    )
    g = tree_from_nested(t)
    pairs = {
        p: [(x.chosen_id, x.rejected_id) for x in tree_pairs(g, Selection(), p)]
        for p in ("all", "adjacent", "best-vs-rest")
    }
    assert len(pairs["all"]) == 6 and ("r0", "r3") in pairs["all"]
    assert pairs["adjacent"] == [("r0", "r1"), ("r1", "r2"), ("r2", "r3")]
    assert pairs["best-vs-rest"] == [("r0", "r1"), ("r0", "r2"), ("r0", "r3")]


def test_pair_prompt_is_the_whole_history(tmp_path):
    t = tree(
        msg(
            "prompter",
            "hi",
            message_id="q0",
            replies=[
                msg(
                    "assistant",
                    "hello",
                    message_id="a0",
                    replies=[
                        msg(
                            "prompter",
                            "and then?",
                            message_id="q1",
                            replies=[
                                msg("assistant", "good", message_id="g", rank=0),
                                msg("assistant", "bad", message_id="b", rank=1),
                            ],
                        )
                    ],
                )
            ],
        )
    )
    path = write_jsonl(tmp_path / "t.jsonl", [t])
    out = tmp_path / "pairs.jsonl"
    export_pairs(path, out)
    [record] = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert record["prompt"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "and then?"},
    ]
    assert record["chosen"] == [{"role": "assistant", "content": "good"}]
    assert record["rejected"] == [{"role": "assistant", "content": "bad"}]
    assert (record["chosen_rank"], record["rejected_rank"], record["parent_id"]) == (0, 1, "q1")


def test_sampler_is_seeded_weighted_and_bounded():
    g = tree_from_nested(_branchy())
    paths = list(tree_paths(g, Selection(), "all")) * 50

    def draw(seed):
        s = PathSampler(10, seed=seed, temperature=0.2)
        for p in paths:
            s.offer(p)
        return s.result()

    assert [p.message_ids for p in draw(3)] == [p.message_ids for p in draw(3)]
    assert len(draw(3)) == 10
    counts = {}
    for seed in range(40):
        for p in draw(seed):
            counts[p.score] = counts.get(p.score, 0) + 1
    assert counts[1.0] > 3 * counts.get(0.5, 0)  # high scores drawn far more often


def _lines(path):
    return path.read_bytes().splitlines()


@pytest.mark.parametrize("source", ["bundled", "shared"])
def test_oasst_compat_counts_match_open_assistant(tmp_path, sample_path, source):
    path = sample_path if source == "bundled" else SHARED_SAMPLE
    if not path.exists():
        pytest.skip("../shared is not beside this checkout")
    export_paths(path, tmp_path / "sft.jsonl", oasst_compat=True)
    export_paths(path, tmp_path / "sft1.jsonl", oasst_compat=True, selection=Selection(top_k=1))
    summary = export_pairs(path, tmp_path / "rm.jsonl", oasst_compat=True, pairing="all")
    assert len(_lines(tmp_path / "sft.jsonl")) == 538
    assert len(_lines(tmp_path / "sft1.jsonl")) == 98
    assert len(_lines(tmp_path / "rm.jsonl")) == 732
    assert summary.prefixes == 207


def _per_tree(path):
    by_tree = {}
    for line in _lines(path):
        rec = orjson.loads(line)
        by_tree.setdefault(rec["tree_id"], []).append(line)
    return by_tree


def test_nested_flat_shuffled_and_gzipped_give_identical_output(tmp_path, sample_path):
    trees = read_trees(sample_path)
    # Real exports date every message; the sample's early export does not, so date it here in
    # export order. The dates are what lets a shuffled flat file recover reply and tree order.
    stamp = 0
    for g in trees:
        for row in tree_to_messages(g):
            g.nodes[row["message_id"]]["created_date"] = (
                f"2023-02-01T{stamp // 3600:02d}:{stamp // 60 % 60:02d}:{stamp % 60:02d}+00:00"
            )
            stamp += 1
    nested = tmp_path / "trees.jsonl"
    write_trees(nested, trees, "trees")
    nested_gz = tmp_path / "trees.jsonl.gz"
    write_trees(nested_gz, trees, "trees")
    rows = [row for g in trees for row in tree_to_messages(g)]
    random.Random(1).shuffle(rows)
    shuffled = write_jsonl(tmp_path / "flat_shuffled.jsonl", rows)
    shuffled_gz = tmp_path / "flat_shuffled.jsonl.gz"
    shuffled_gz.write_bytes(gzip.compress(shuffled.read_bytes()))

    jobs = {
        "all": dict(strategy="all"),
        "best": dict(strategy="best"),
        "top2": dict(strategy="top-k", selection=Selection(top_k=2)),
        "compat": dict(oasst_compat=True),
    }
    for name, kwargs in jobs.items():
        outputs = {}
        for label, src in (
            ("nested", nested),
            ("nested_gz", nested_gz),
            ("shuffled", shuffled),
            ("shuffled_gz", shuffled_gz),
        ):
            outputs[label] = tmp_path / f"{name}_{label}.jsonl"
            export_paths(src, outputs[label], **kwargs)
        reference = _lines(outputs["nested"])
        assert len(reference) == {"all": 564, "best": 100, "top2": 291, "compat": 538}[name]
        for label in ("nested_gz", "shuffled", "shuffled_gz"):
            assert _lines(outputs[label]) == reference, (name, label)
    for label, src in (("nested", nested), ("shuffled_gz", shuffled_gz)):
        export_pairs(src, tmp_path / f"pairs_{label}.jsonl")
    assert _lines(tmp_path / "pairs_nested.jsonl") == _lines(tmp_path / "pairs_shuffled_gz.jsonl")


def test_undated_shuffled_flat_file_gives_the_same_records_per_tree(tmp_path, sample_path):
    # Without created_date a shuffled file keeps no tree order; our strategies order replies by
    # rank and id, so each tree still gives exactly the same records.
    trees = read_trees(sample_path)
    rows = [row for g in trees for row in tree_to_messages(g)]
    random.Random(2).shuffle(rows)
    shuffled = write_jsonl(tmp_path / "flat.jsonl", rows)
    export_paths(sample_path, tmp_path / "a.jsonl")
    export_paths(shuffled, tmp_path / "b.jsonl")
    assert _per_tree(tmp_path / "a.jsonl") == _per_tree(tmp_path / "b.jsonl")


def test_outputs_parquet_datasets_and_split(tmp_path, sample_path):
    summary = export_paths(sample_path, tmp_path / "paths.parquet", validation_fraction=0.2, seed=5)
    train = pq.read_table(tmp_path / "paths.train.parquet").to_pylist()
    validation = pq.read_table(tmp_path / "paths.validation.parquet").to_pylist()
    assert len(train) + len(validation) == 564 == sum(summary.written.values())
    assert {r["tree_id"] for r in train}.isdisjoint({r["tree_id"] for r in validation})
    assert train[0]["messages"][0]["role"] == "user"

    export_pairs(sample_path, tmp_path / "pairs_ds", validation_fraction=0.2, seed=5)
    dd = datasets.load_from_disk(str(tmp_path / "pairs_ds"))
    assert set(dd) == {"train", "validation"}
    assert set(dd["train"].column_names) >= {
        "prompt",
        "chosen",
        "rejected",
        "chosen_rank",
        "rejected_rank",
    }
    assert {r for r in dd["train"]["tree_id"]}.isdisjoint(set(dd["validation"]["tree_id"]))


def test_cli_export_stats_and_sample(tmp_path, sample_path):
    out = tmp_path / "compat.jsonl"
    r = run_cli("paths", "export", sample_path, "--oasst-compat", "-o", out)
    assert r.returncode == 0, r.stderr
    assert len(_lines(out)) == 538 and "wrote 538 records" in r.stderr
    r = run_cli(
        "pairs",
        "export",
        sample_path,
        "--oasst-compat",
        "--pairing",
        "all",
        "-o",
        tmp_path / "rm.jsonl",
    )
    assert r.returncode == 0 and "wrote 732 records" in r.stderr and "207 prefixes" in r.stderr
    r = run_cli("paths", "stats", sample_path, "--json")
    stats = orjson.loads(r.stdout)
    assert stats["trees"] == 100 and stats["messages"] == 1167
    assert stats["roles"] == {"prompter": 480, "assistant": 687}
    assert stats["assistants_ranked"] == 641 and stats["synthetic"] == 22
    assert stats["paths_per_strategy"]["oasst-compat"] == 538
    r = run_cli("paths", "sample", sample_path, "-n", "3", "--seed", "4", "--format", "jsonl")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 3
    again = run_cli("paths", "sample", sample_path, "-n", "3", "--seed", "4", "--format", "jsonl")
    assert again.stdout == r.stdout
    pretty = run_cli("paths", "sample", sample_path, "-n", "2", "--seed", "4")
    assert "assistant" in pretty.stdout and "rank" in pretty.stdout
    bad = run_cli("paths", "export", sample_path, "-o", tmp_path / "x.jsonl", "--strategy", "nope")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
