"""Files as other projects write them: LibreChat's ``messagesTree``, Open-Assistant's message
lines with nested replies, chat datasets in the Hub's parquet layouts, ChatGPT conversations
without links, and Chatbot UI exports.

The fixtures in tests/fixtures/chat were written for this project from each format's
documentation and real structure (field names, nesting, nulls), not copied. Each test reads one
and checks the conversations a person sees in the source application: the same turns, in the
same order, the shown branch as the best path; bad records rejected with file and line, the rest
kept, and read = kept + rejected.
"""

from __future__ import annotations

import gzip

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ROOT, run_cli
from convdistill.conversation_trees import Selection, TreeReader, path_record, read_trees, tree_paths
from convdistill.conversation_trees.hub import BATCH_ROWS

FIXTURES = ROOT / "tests" / "fixtures" / "chat"
ANY_STATE = Selection(tree_states=())


def turns(tree, strategy="all", selection=None):
    """Each path as (role, text) pairs, in order."""
    return [
        [(m["role"], m["content"]) for m in path_record(p)["messages"]]
        for p in tree_paths(tree, selection or Selection(), strategy)
    ]


def counts(reader):
    report = reader.report
    assert report.balanced
    return report.records_read, report.records_kept, report.records_rejected


# -- LibreChat: the current export names its tree `messagesTree` -----------------------------------
def test_librechat_messages_tree_is_the_same_tree_as_the_older_messages_form():
    reader = TreeReader(FIXTURES / "librechat_messages_tree.json")
    [current] = list(reader)
    assert reader.report.format == "librechat" and counts(reader) == (1, 1, 0)
    [older] = read_trees(FIXTURES / "librechat_nested.json")
    assert sorted(current.nodes) == sorted(older.nodes)
    assert [current.nodes[m]["text"] for m in current.nodes] == [older.nodes[m]["text"] for m in older.nodes]
    # The interface shows the newest branch: through the regenerated reply, to the last answer.
    assert turns(current, "best") == [[
        ("user", "How do I feed a sourdough starter?"),
        ("assistant", "Feed it once a day: keep 50 g, add 50 g flour and 50 g water."),
        ("user", "Which flour works best?"),
        ("assistant", "Whole rye or whole wheat ferments fastest."),
    ]]
    assert len(turns(current)) == 2  # the first, regenerated-away answer is the other path


# -- Open-Assistant's own message files: a root message a line, replies nested ----------------------
def test_oasst_message_lines_are_whole_trees_and_bad_lines_are_named():
    rejects = []
    reader = TreeReader(FIXTURES / "oasst_message_trees.jsonl", on_reject=rejects.append)
    trees = list(reader)
    assert reader.report.format == "message-trees"
    assert counts(reader) == (6, 3, 3)
    assert [t.graph["message_tree_id"] for t in trees] == ["mt-1", "mt-2", "mt-5"]
    # No tree state on such lines: read as ready_for_export, so the default filters keep them.
    assert {t.graph["tree_state"] for t in trees} == {"ready_for_export"}
    plant = trees[0]
    assert turns(plant) == [
        [("user", "What is a good first houseplant?"),
         ("assistant", "A pothos: it tolerates low light and irregular watering."),
         ("user", "How often should I water it?"),
         ("assistant", "When the top few centimetres of soil are dry, about once a week.")],
        [("user", "What is a good first houseplant?"), ("assistant", "A cactus, if your window gets full sun.")],
    ]
    assert plant.nodes["mt-1a"]["labels"] == {"quality": {"value": 0.75, "count": 3}}
    assert [(r.line, r.kind) for r in rejects] == [(3, "schema"), (4, "roles"), (6, "malformed_json")]
    assert "root message" in rejects[0].reason and rejects[0].message_id == "mt-3a"
    # Ranked siblings give pairs, as in any Open-Assistant export; --lang filters by the root's.
    assert len(turns(trees[2], selection=Selection(langs=("de",)))) == 1
    assert turns(trees[2], selection=Selection(langs=("en",))) == []


def test_oasst_message_lines_through_the_cli(tmp_path):
    out = tmp_path / "paths.jsonl"
    done = run_cli("paths", "export", FIXTURES / "oasst_message_trees.jsonl", "-o", out, "--strategy", "all")
    assert done.returncode == 0, done.stderr
    assert "read 6 tree lines, kept 3, rejected 3" in done.stderr
    assert len(out.read_bytes().splitlines()) == 5
    pairs = tmp_path / "pairs.jsonl"
    done = run_cli("pairs", "export", FIXTURES / "oasst_message_trees.jsonl", "-o", pairs)
    assert done.returncode == 0, done.stderr
    records = [orjson.loads(line) for line in pairs.read_bytes().splitlines()]
    assert [(r["chosen_id"], r["rejected_id"]) for r in records] == [("mt-1a", "mt-1b"), ("mt-2a", "mt-2b")]


# -- ChatGPT conversations without parent/children links ----------------------------------------
def test_chatgpt_without_links_is_one_thread_in_time_or_mapping_order():
    rejects = []
    reader = TreeReader(FIXTURES / "chatgpt_unlinked.json", on_reject=rejects.append)
    camping, translations = list(reader)
    assert counts(reader) == (3, 2, 1)
    # The mapping lists the first answer before its question: create_time puts them in order,
    # and the question left without a reply at the end is dropped and counted.
    assert turns(camping) == [[
        ("user", "What do I need for a first camping trip?"),
        ("assistant", "Start with a tent, a sleeping bag and a stove."),
        ("user", "And for rain?"),
        ("assistant", "A tarp and a rain jacket."),
    ]]
    assert reader.report.skipped == {"trailing user message without a reply": 1}
    assert "n-u3" not in camping.nodes and camping.nodes["n-a2"]["model_name"] == "gpt-4o"
    # No times at all: the mapping's order.
    assert [text for _, text in turns(translations)[0]] == [
        "Translate 'cat' into French.", "Chat.", "And into German?", "Katze."]
    [bad] = rejects
    assert (bad.file, bad.line) == (str(FIXTURES / "chatgpt_unlinked.json"), 3)


# -- Chatbot UI ----------------------------------------------------------------------------------
def test_chatbot_ui_export_history_with_system_prompt_and_model():
    rejects = []
    reader = TreeReader(FIXTURES / "chatbot_ui_export.json", on_reject=rejects.append)
    bread, hello = list(reader)
    assert reader.report.format == "chatbot-ui" and counts(reader) == (4, 2, 2)
    assert bread.graph["title"] == "Bread" and bread.graph["source"] == "chatbot-ui"
    # `prompt` is the system prompt the interface sent: the first message of every path.
    assert turns(bread) == [[
        ("system", "You are a helpful baker."),
        ("user", "How long should bread dough rise?"),
        ("assistant", "Until it doubles, usually one to two hours."),
        ("user", "And in the fridge?"),
        ("assistant", "Overnight, 8 to 16 hours."),
    ]]
    assert {bread.nodes[m].get("model_name") for m in bread.nodes} == {None, "GPT-3.5"}
    assert "system" not in hello.graph  # an empty prompt adds nothing
    assert [(r.line, r.kind) for r in rejects] == [(3, "conversation"), (4, "conversation")]
    assert "content must be a string" in rejects[0].reason and "no user message" in rejects[1].reason


# -- chat datasets in the Hub's layouts ------------------------------------------------------------
ULTRACHAT_ROWS = [
    {"prompt": "Name three primary colours.", "prompt_id": "p-1", "messages": [
        {"content": "Name three primary colours.", "role": "user"},
        {"content": "Red, yellow and blue.", "role": "assistant"},
        {"content": "And in light?", "role": "user"},
        {"content": "Red, green and blue.", "role": "assistant"}]},
    {"prompt": "Say nothing.", "prompt_id": "p-2", "messages": []},  # bad: no conversation
    {"prompt": "What is 2+2?", "prompt_id": "p-3", "messages": [
        {"content": "What is 2+2?", "role": "user"}, {"content": "4.", "role": "assistant"}]},
]
SHAREGPT_ROWS = [
    {"id": "sg-1", "conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"},
                                     {"from": "gpt", "value": "Hello."}]},
    {"id": "sg-2", "conversations": [{"from": "gpt", "value": "I speak first."}]},  # bad: no user turn
]


def _parquet(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize(("rows", "fmt", "expected"), [
    (ULTRACHAT_ROWS, "trl-messages", (3, 2, 1)),
    (SHAREGPT_ROWS, "sharegpt", (2, 1, 1)),
])
def test_hub_chat_parquet_file(tmp_path, rows, fmt, expected):
    path = _parquet(tmp_path / "train-00000-of-00001.parquet", rows)
    rejects = []
    reader = TreeReader(path, on_reject=rejects.append)
    trees = list(reader)
    assert reader.report.format == fmt and counts(reader) == expected
    assert [r.line for r in rejects] == [2] and rejects[0].file == str(path)
    if fmt == "trl-messages":
        assert turns(trees[0]) == [[("user", "Name three primary colours."), ("assistant", "Red, yellow and blue."),
                                    ("user", "And in light?"), ("assistant", "Red, green and blue.")]]
        assert trees[0].graph["conversation_id"] == "p-1"
    else:
        assert turns(trees[0]) == [[("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello.")]]


def test_hub_chat_data_folder_split_and_save_to_disk(tmp_path):
    from datasets import Dataset, DatasetDict

    data = tmp_path / "ultrachat" / "data"
    _parquet(data / "train_sft-00000-of-00001.parquet", ULTRACHAT_ROWS)
    _parquet(data / "test_sft-00000-of-00001.parquet", ULTRACHAT_ROWS[2:])
    reader = TreeReader(data)
    assert len(list(reader)) == 3 and counts(reader) == (4, 3, 1)
    reader = TreeReader(data, split="test_sft")
    assert len(list(reader)) == 1 and counts(reader) == (1, 1, 0)
    saved = tmp_path / "saved"
    DatasetDict({"train": Dataset.from_list(ULTRACHAT_ROWS)}).save_to_disk(str(saved))
    reader = TreeReader(saved)
    trees = list(reader)
    assert reader.report.format == "trl-messages" and counts(reader) == (3, 2, 1)
    assert turns(trees[1]) == [[("user", "What is 2+2?"), ("assistant", "4.")]]


def test_hub_chat_parquet_streams(tmp_path):
    # Trees come out while the file is read: the first one after at most one record batch.
    rows = [ULTRACHAT_ROWS[2]] * (3 * BATCH_ROWS)
    reader = TreeReader(_parquet(tmp_path / "big.parquet", rows))
    trees = iter(reader)
    next(trees)
    assert reader.report.records_read <= BATCH_ROWS
    assert sum(1 for _ in trees) == 3 * BATCH_ROWS - 1 and counts(reader) == (3 * BATCH_ROWS,) * 2 + (0,)


# -- trees convert, for each format ------------------------------------------------------------------
@pytest.mark.parametrize(("name", "trees_written"), [
    ("librechat_messages_tree.json", 1),
    ("oasst_message_trees.jsonl", 3),
    ("chatgpt_unlinked.json", 2),
    ("chatbot_ui_export.json", 2),
])
def test_trees_convert_each_format(tmp_path, name, trees_written):
    out = tmp_path / "converted.jsonl.gz"
    done = run_cli("trees", "convert", FIXTURES / name, "-o", out)
    assert done.returncode == 0, done.stderr
    assert f"wrote {trees_written} trees" in done.stderr and "Traceback" not in done.stderr
    converted = read_trees(out)
    assert [turns(t) for t in converted] == [turns(t) for t in read_trees(FIXTURES / name)]
    assert len(gzip.decompress(out.read_bytes()).splitlines()) == trees_written


def test_trees_convert_hub_chat_parquet(tmp_path):
    source = _parquet(tmp_path / "data" / "train-00000-of-00001.parquet", ULTRACHAT_ROWS)
    out = tmp_path / "ultrachat.jsonl"
    done = run_cli("trees", "convert", source.parent, "-o", out)
    assert done.returncode == 0, done.stderr
    assert "read 3 conversations, kept 2, rejected 1" in done.stderr
    assert [turns(t) for t in read_trees(out)] == [turns(t) for t in read_trees(source)]


def test_bad_record_fails_with_file_and_line(tmp_path):
    done = run_cli("paths", "export", FIXTURES / "chatbot_ui_export.json", "-o", tmp_path / "o.jsonl",
                   "--on-error", "fail")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"{FIXTURES / 'chatbot_ui_export.json'}:3" in done.stderr
