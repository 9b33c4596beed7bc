"""The Hub's Open-Assistant layouts (parquet file, data/ folder, save_to_disk) and flat grouping
on disk: the same trees give byte-identical paths and pairs to the JSONL export."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from conftest import run_cli
from convdistill.conversation_trees import ScoreWeights, TreeReader, read_trees, write_trees
from convdistill.conversation_trees.exports import ReadOptions, export_pairs, export_paths
from convdistill.conversation_trees.hub import (
    HUB_SCHEMA,
    hub_row_to_message,
    message_to_hub_row,
    write_hub_parquet,
)
from convdistill.conversation_trees.writers import tree_to_messages, tree_to_nested

WEIGHTS = ScoreWeights(labels={"quality": 1.0, "toxicity": -1.0}, emojis=0.5)  # uses both structs


@pytest.fixture(scope="module")
def hub_file(tmp_path_factory, sample_path):
    path = tmp_path_factory.mktemp("hub") / "train-00000-of-00001.parquet"
    write_hub_parquet(path, read_trees(sample_path))
    return path


def _outputs(tmp_path, source, name, **read):
    """Every path strategy and pairing of one input, as bytes."""
    out = {}
    for strategy in ("all", "best"):
        target = tmp_path / f"{name}-{strategy}.jsonl"
        export_paths(source, target, strategy=strategy, weights=WEIGHTS, read=ReadOptions(**read))
        out[strategy] = target.read_bytes()
    target = tmp_path / f"{name}-compat.jsonl"
    export_paths(source, target, oasst_compat=True, read=ReadOptions(**read))
    out["compat"] = target.read_bytes()
    for pairing in ("all", "adjacent"):
        target = tmp_path / f"{name}-pairs-{pairing}.jsonl"
        export_pairs(source, target, pairing=pairing, read=ReadOptions(**read))
        out[f"pairs-{pairing}"] = target.read_bytes()
    return out


def test_hub_schema_columns_are_the_dataset_cards(hub_file):
    schema = pq.read_schema(hub_file)
    assert schema.equals(HUB_SCHEMA)
    emojis = schema.field("emojis").type
    assert [emojis.field(i).name for i in range(emojis.num_fields)] == ["name", "count"]
    assert pq.ParquetFile(hub_file).metadata.num_rows == 1167


def test_hub_parquet_gives_byte_identical_paths_and_pairs(tmp_path, sample_path, hub_file):
    # The bundled sample (nested JSONL), the same trees as flat JSONL, and as the Hub's parquet.
    flat = tmp_path / "flat.jsonl"
    write_trees(flat, read_trees(sample_path), "messages")
    nested = _outputs(tmp_path, sample_path, "nested")
    assert all(nested.values()) and nested["pairs-all"].count(b"\n") > 100
    assert _outputs(tmp_path, flat, "flat") == nested
    assert _outputs(tmp_path, hub_file, "hub") == nested


def test_rows_come_back_as_the_export_messages(sample_path):
    for graph in read_trees(sample_path):
        for message in tree_to_messages(graph):
            back = hub_row_to_message(message_to_hub_row(message))
            assert back == {k: v for k, v in message.items() if k in HUB_SCHEMA.names}


def test_rank_written_as_float_is_read_as_int():
    row = {"message_id": "m", "text": "t", "role": "assistant", "rank": 1.0, "emojis": None}
    assert hub_row_to_message(row) == {"message_id": "m", "text": "t", "role": "assistant", "rank": 1}


def test_hub_folder_reads_all_splits_or_one(tmp_path, sample_path):
    trees = read_trees(sample_path)
    data = tmp_path / "oasst" / "data"
    write_hub_parquet(data / "train-00000-of-00001-abc.parquet", trees[:80])
    write_hub_parquet(data / "validation-00000-of-00001-def.parquet", trees[80:])
    whole = TreeReader(tmp_path / "oasst")
    assert len(list(whole)) == 100 and whole.report.format == "hub-parquet"
    assert (whole.report.records_read, whole.report.records_rejected) == (1167, 0)
    assert len(list(TreeReader(data, split="train"))) == 80
    assert len(list(TreeReader(data, split="validation"))) == 20
    with pytest.raises(ValueError, match="no parquet files of split 'test'"):
        list(TreeReader(data, split="test"))
    # The CLI takes the folder and a split.
    out = tmp_path / "val.jsonl"
    done = run_cli("paths", "export", data, "--hub-split", "validation", "-o", out)
    assert done.returncode == 0, done.stderr
    assert "read 1167" not in done.stderr and "message rows" in done.stderr


def test_save_to_disk_folder_reads_like_the_jsonl(tmp_path, sample_path, hub_file):
    datasets = pytest.importorskip("datasets")
    table = pq.read_table(hub_file)
    single = tmp_path / "single"
    datasets.Dataset(table).save_to_disk(single)
    both = tmp_path / "dict"
    half = table.num_rows // 2
    datasets.DatasetDict(
        {"train": datasets.Dataset(table.slice(0, half)), "validation": datasets.Dataset(table.slice(half))}
    ).save_to_disk(both)
    expected = [tree_to_nested(g) for g in read_trees(hub_file)]
    reader = TreeReader(single)
    assert [tree_to_nested(g) for g in reader] == expected and reader.report.format == "hub-datasets"
    # Splitting rows in the middle of a tree orphans rows per split; both splits together do not.
    assert [tree_to_nested(g) for g in TreeReader(both)] == expected
    train = TreeReader(both, split="train")
    list(train)
    assert train.report.balanced and train.report.records_read == half


def test_flat_rows_spilled_to_disk_make_the_same_trees(tmp_path, sample_path, hub_file):
    flat = tmp_path / "flat.jsonl"
    write_trees(flat, read_trees(sample_path), "messages")
    expected = {g.graph["message_tree_id"]: tree_to_nested(g) for g in read_trees(flat)}
    for source in (flat, hub_file):
        reader = TreeReader(source, spill_bytes=20_000)  # the sample is about 1 MB: many buckets
        got = {g.graph["message_tree_id"]: tree_to_nested(g) for g in reader}
        assert got == expected
        assert reader.report.balanced and reader.report.records_rejected == 0


def test_spilled_rows_without_a_tree_id_are_rejected_and_counted(tmp_path, sample_path):
    rows = [r for g in read_trees(sample_path)[:20] for r in tree_to_messages(g)]
    del rows[5]["message_tree_id"]  # a reply row: its tree cannot be told without the others
    path = tmp_path / "flat.jsonl"
    path.write_bytes(b"".join(__import__("orjson").dumps(r) + b"\n" for r in rows))
    rejects = []
    reader = TreeReader(path, spill_bytes=5_000, on_reject=rejects.append)
    list(reader)
    assert reader.report.balanced
    assert rejects[0].line == 6 and "no message_tree_id" in rejects[0].reason


def test_damaged_parquet_is_one_reject_not_a_traceback(tmp_path, hub_file):
    cut = tmp_path / "cut.parquet"
    data = hub_file.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    done = run_cli("paths", "export", cut, "-o", tmp_path / "out.jsonl")
    assert "Traceback" not in done.stderr
    assert done.returncode in (0, 1)
    assert "cut.parquet:1: file cannot be read further" in done.stderr and "unreadable" in done.stderr
