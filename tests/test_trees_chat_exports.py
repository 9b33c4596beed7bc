"""Chat histories as trees: ChatGPT, Open WebUI, LibreChat, TRL messages and ShareGPT.

Fixtures in tests/fixtures/chat were written for this project from the formats' documentation:
branches of both kinds (regenerated answers, edited questions), hidden and visible system
messages, tool calls and outputs, interrupted replies, images and attached files, and broken
conversations (a missing parent, a cycle, a record of another kind).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ROOT, run_cli
from convdistill.conversation_trees import Selection, TreeReader, read_trees, tree_paths
from convdistill.conversation_trees.chat_exports import (
    ChatConversation,
    ChatNode,
    conversation_trees,
)
from convdistill.conversation_trees.exports import export_pairs
from convdistill.conversation_trees.readers import UnknownFormatError
from convdistill.conversation_trees.redact import Redactor

FIXTURES = ROOT / "tests" / "fixtures" / "chat"
CHATGPT = FIXTURES / "chatgpt_conversations.json"
OPENWEBUI = FIXTURES / "openwebui_export.json"
LIBRECHAT_FLAT = FIXTURES / "librechat_flat.json"
LIBRECHAT_NESTED = FIXTURES / "librechat_nested.json"


def texts(tree, strategy="all"):
    nodes = tree.nodes
    return [[nodes[m]["text"][:20] for m in p.message_ids] for p in tree_paths(tree, Selection(), strategy)]


def ids(tree, strategy="all"):
    return [list(p.message_ids) for p in tree_paths(tree, Selection(), strategy)]


def test_chatgpt_branches_shown_path_and_skips():
    reader = TreeReader(CHATGPT, on_error="skip")
    trees = list(reader)
    report = reader.report
    assert report.format == "chatgpt"
    assert (report.records_read, report.records_kept, report.records_rejected) == (3, 2, 1)
    # The hidden empty system message, the code call and its output, the image part: counted.
    assert report.skipped == {
        "hidden system message": 1,
        "tool call": 1,
        "tool output": 1,
        "non-text part": 1,
    }
    paris = trees[0]
    assert paris.graph["source"] == "chatgpt" and paris.graph["conversation_id"] == "conv-paris"
    assert paris.graph["title"] == "Paris in spring" and "system" not in paris.graph
    # Every branch ending on an assistant reply is a path; the shown branch comes first.
    assert ids(paris) == [["u1", "a1b", "u2b", "a3"], ["u1", "a1b", "u2", "a2"], ["u1", "a1"]]
    # current_node's branch is the best path, through the regenerated reply and the edited question.
    assert ids(paris, "best") == [["u1", "a1b", "u2b", "a3"]]
    nodes = paris.nodes
    assert nodes["a3"]["interrupted"] is True and nodes["a3"]["model_name"] == "gpt-4o"
    assert nodes["u2b"]["text"] == "What should I pack for a rainy week?"  # the image part dropped
    assert not nodes["a1"].get("shown") and nodes["a1b"]["shown"] is True
    assert "rank" not in nodes["a1"] and "rank" not in nodes["a1b"]  # no ranks without the option
    assert nodes["a1b"]["created_date"].startswith("2024-04-24T23:07:10")


def test_chatgpt_system_prompt_and_edited_first_question():
    trees = read_trees(CHATGPT)[1:]
    # Two versions of the first question: the schema has one root a tree, so two trees.
    assert [t.graph["message_tree_id"] for t in trees] == ["g-u1", "g-u1b"]
    assert {t.graph["conversation_id"] for t in trees} == {"conv-greet"}
    assert all(t.graph["system"] == "You are a terse assistant." for t in trees)
    from convdistill.conversation_trees import path_record

    record = path_record(next(tree_paths(trees[1], Selection(), "best")))
    assert record["messages"][0] == {"role": "system", "content": "You are a terse assistant."}
    # Provenance lists stay parallel to the messages.
    assert len(record["message_ids"]) == len(record["ranks"]) == len(record["messages"]) == 3
    assert trees[1].nodes["g-u1b"]["shown"] is True and not trees[0].nodes["g-u1"].get("shown")


def test_openwebui_multi_model_siblings_stale_children_and_rejects():
    rejects = []
    reader = TreeReader(OPENWEBUI, on_reject=rejects.append)
    chat, failed = list(reader)
    # w-a2 lists no children, but w-u2 names it as parent: parent links are what counts.
    assert ids(chat, "best") == [["w-u1", "w-a2", "w-u2", "w-a3"]]
    assert ids(chat) == [["w-u1", "w-a2", "w-u2", "w-a3"], ["w-u1", "w-a1"]]
    assert chat.nodes["w-a1"]["model_name"] == "Llama 3 8B" and chat.nodes["w-a3"]["interrupted"]
    # The failed, empty answer is skipped and counted; the retry is kept and shown.
    assert list(failed.succ["x-u1"]) == ["x-a1b"]
    assert reader.report.skipped == {"empty assistant message": 1}
    [loop] = rejects
    assert loop.line == 3 and loop.tree_id == "owui-chat-3" and "cycle" in loop.reason
    assert reader.report.balanced


def test_librechat_flat_and_nested_exports_are_the_same_tree():
    flat, nested = read_trees(LIBRECHAT_FLAT), read_trees(LIBRECHAT_NESTED)
    assert [t.graph for t in flat] == [t.graph for t in nested]
    assert [dict(t.nodes(data=True)) for t in flat] == [dict(t.nodes(data=True)) for t in nested]
    [tree] = flat
    # No current pointer: the newest message's branch is the shown one.
    assert ids(tree, "best") == [["l-u1", "l-a1b", "l-u2", "l-a2"]]
    assert tree.nodes["l-a2"]["text"] == "Whole rye or whole wheat ferments fastest."
    assert tree.nodes["l-a2"]["interrupted"] is True


@pytest.mark.parametrize(
    ("name", "fmt", "expected"),
    [
        ("trl_messages.jsonl", "trl-messages", (3, 2, 1)),
        ("sharegpt.jsonl", "sharegpt", (2, 2, 0)),
    ],
)
def test_linear_datasets_are_one_path_trees(name, fmt, expected):
    reader = TreeReader(FIXTURES / name)
    trees = list(reader)
    report = reader.report
    assert report.format == fmt
    assert (report.records_read, report.records_kept, report.records_rejected) == expected
    first = trees[0]
    assert first.graph["system"] and len(ids(first)) == 1 and len(ids(first)[0]) == 4
    if fmt == "sharegpt":
        # function_call and observation turns are skipped and counted, the answer kept.
        assert report.skipped == {"function_call message": 1, "observation message": 1}
        assert texts(trees[1]) == [["What is 3 squared?", "9."]]


def test_rank_shown_branch_gives_marked_pairs(tmp_path):
    plain = tmp_path / "plain.jsonl"
    export_pairs(CHATGPT, plain)
    assert plain.read_bytes() == b""  # no ranks without the option
    ranked = tmp_path / "ranked.jsonl"
    summary = export_pairs(CHATGPT, ranked, shown_branch_ranks=True)
    pairs = [orjson.loads(line) for line in ranked.read_bytes().splitlines()]
    # Regenerated siblings only: a1b (shown) over a1; the edited questions are never ranked, and
    # the two first questions of conv-greet are separate trees with one reply each.
    assert [(p["chosen_id"], p["rejected_id"], p["ranked_by"]) for p in pairs] == [("a1b", "a1", "shown-branch")]
    assert (pairs[0]["chosen_rank"], pairs[0]["rejected_rank"]) == (0, 1)
    assert summary.report.balanced
    # Open WebUI's two models answering one question: the shown one is chosen.
    export_pairs(OPENWEBUI, ranked, shown_branch_ranks=True)
    pairs = [orjson.loads(line) for line in ranked.read_bytes().splitlines()]
    assert [(p["chosen_id"], p["rejected_id"]) for p in pairs] == [("w-a2", "w-a1")]


def test_redaction_before_anything_is_written(tmp_path):
    out = tmp_path / "paths.jsonl"
    done = run_cli("paths", "export", CHATGPT, "-o", out, "--redact", "emails,phones,urls")
    assert done.returncode == 0, done.stderr
    body = out.read_text()
    assert "jane.doe@example.com" not in body and "+33 6 12 34 56 78" not in body
    assert "parisinfo" not in body
    assert "[EMAIL]" in body and "[PHONE]" in body and "[URL]" in body
    assert "redacted 1 emails, 1 phones, 1 urls" in done.stderr


def test_redactor_patterns(tmp_path):
    extra = tmp_path / "patterns.txt"
    extra.write_text("# names\nJane Doe\n")
    redactor = Redactor.from_options(("emails", "phones", "urls"), extra)
    from collections import Counter

    counts: Counter = Counter()
    text = (
        "Jane Doe, jane@doe.org, (555) 123-4567, www.example.com/x?y=1. "
        "Born 2023-04-12, 42 cats, version 1.2.3."
    )
    assert redactor.text(text, counts) == (
        "[REDACTED], [EMAIL], [PHONE], [URL]. Born 2023-04-12, 42 cats, version 1.2.3."
    )
    assert counts == {"emails": 1, "phones": 1, "urls": 1, "patterns": 1}


def test_convert_output_is_an_export_read_by_every_command(tmp_path):
    out = tmp_path / "chatgpt.jsonl.gz"
    done = run_cli("trees", "convert", CHATGPT, "-o", out, "--redact", "emails")
    assert done.returncode == 0, done.stderr
    assert "wrote 3 trees" in done.stderr
    lines = gzip.decompress(out.read_bytes()).splitlines()
    first = orjson.loads(lines[0])
    assert first["source"] == "chatgpt" and first["prompt"]["role"] == "prompter"
    assert "[EMAIL]" in first["prompt"]["text"]
    again = TreeReader(out)
    converted = list(again)
    assert again.report.format == "trees"
    assert [ids(t) for t in converted] == [ids(t) for t in read_trees(CHATGPT)]
    # extend reads it (a dry run counts the teacher requests without sending any).
    dry = run_cli("extend", out, "-o", tmp_path / "ext.jsonl", "--dry-run", "--turns", "1")
    assert dry.returncode == 0, dry.stderr
    assert "Traceback" not in dry.stderr


def test_unknown_input_gets_one_line_naming_the_formats(tmp_path):
    odd = tmp_path / "notes.json"
    odd.write_text('[{"hello": "world"}]')
    with pytest.raises(UnknownFormatError, match=r"ChatGPT conversations\.json"):
        list(TreeReader(odd))
    text = tmp_path / "notes.txt"
    text.write_text("just some text\n")
    done = run_cli("paths", "export", text, "-o", tmp_path / "o.jsonl")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "accepted:" in done.stderr


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.9])
def test_truncated_chat_export_is_reported_not_raised(tmp_path, cut):
    data = CHATGPT.read_bytes()
    path = tmp_path / "conversations.json"
    path.write_bytes(data[: int(len(data) * cut)])
    rejects = []
    reader = TreeReader(path, on_reject=rejects.append)
    assert list(reader) == []
    assert reader.report.balanced and rejects and rejects[0].kind == "malformed_json"


# -- property: a tree written out in a chat format and read back keeps its paths ---------------
@st.composite
def random_tree(draw) -> list[tuple[str, str | None, str]]:
    """(id, parent, role) of a random alternating tree rooted at a user message."""
    nodes = [("n0", None, "user")]
    for i in range(1, draw(st.integers(1, 12))):
        parent = draw(st.sampled_from(nodes))
        role = "assistant" if parent[2] == "user" else "user"
        nodes.append((f"n{i}", parent[0], role))
    return nodes


def _as_chatgpt(nodes, current):
    mapping = {"root": {"id": "root", "message": None, "parent": None, "children": ["n0"]}}
    for i, (nid, parent, role) in enumerate(nodes):
        mapping[nid] = {
            "id": nid,
            "parent": parent or "root",
            "children": [n for n, p, _ in nodes if p == nid],
            "message": {
                "id": nid,
                "author": {"role": role},
                "create_time": 1_700_000_000 + i,
                "content": {"content_type": "text", "parts": [f"text of {nid}"]},
                "metadata": {},
            },
        }
    return [{"conversation_id": "c", "title": "t", "mapping": mapping, "current_node": current}]


def _as_openwebui(nodes, current):
    messages = {
        nid: {
            "id": nid,
            "parentId": parent,
            "childrenIds": [n for n, p, _ in nodes if p == nid],
            "role": role,
            "content": f"text of {nid}",
            "timestamp": 1_700_000_000 + i,
        }
        for i, (nid, parent, role) in enumerate(nodes)
    }
    return [{"id": "c", "title": "t", "chat": {"history": {"messages": messages, "currentId": current}}}]


def _as_librechat(nodes, current):
    del current  # LibreChat keeps no pointer
    return {
        "conversationId": "c",
        "title": "t",
        "messages": [
            {
                "messageId": nid,
                "parentMessageId": parent or "00000000-0000-0000-0000-000000000000",
                "isCreatedByUser": role == "user",
                "text": f"text of {nid}",
                "createdAt": f"2024-01-01T00:00:{i:02d}.000Z",
            }
            for i, (nid, parent, role) in enumerate(nodes)
        ],
    }


@settings(max_examples=40, deadline=None)
@given(data=st.data(), writer=st.sampled_from([_as_chatgpt, _as_openwebui, _as_librechat]))
def test_written_tree_reads_back_with_the_same_paths(tmp_path_factory, data, writer):
    nodes = data.draw(random_tree())
    leaves = [n for n, _, _ in nodes if not any(p == n for _, p, _ in nodes)]
    current = data.draw(st.sampled_from(leaves)) if writer is not _as_librechat else leaves[-1]
    path = tmp_path_factory.mktemp("prop") / "export.json"
    path.write_bytes(orjson.dumps(writer(nodes, current)))
    [tree] = read_trees(path)
    parent = {n: p for n, p, _ in nodes}
    # Every root-to-leaf thread ending on an assistant (trailing user turns trimmed) is a path.
    expected = set()
    for leaf in leaves:
        thread = [leaf]
        while parent[thread[-1]] is not None:
            thread.append(parent[thread[-1]])
        thread.reverse()
        while thread and dict((n, r) for n, _, r in nodes)[thread[-1]] == "user":
            thread.pop()
        if len(thread) >= 2:
            expected.add(tuple(thread))
    assert {tuple(p) for p in ids(tree)} == expected
    # The best path follows the shown branch (up to its last assistant reply).
    shown = [current]
    while parent[shown[-1]] is not None:
        shown.append(parent[shown[-1]])
    shown.reverse()
    while shown and dict((n, r) for n, _, r in nodes)[shown[-1]] == "user":
        shown.pop()
    assert ids(tree, "best") == ([shown] if len(shown) >= 2 else [])


def test_same_role_runs_are_joined_so_roles_alternate():
    conv = ChatConversation(
        "test",
        "c",
        None,
        [
            ChatNode("u", None, "user", "question"),
            ChatNode("a", "u", "assistant", "first part"),
            ChatNode("call", "a", "assistant", None, skip="tool call"),
            ChatNode("b", "call", "assistant", "second part"),
            ChatNode("b2", "a", "assistant", "another ending", created=1.0),
            ChatNode("u2", "b", "user", "thanks"),
        ],
        current="u2",
    )
    [tree], skipped = conversation_trees(conv)
    prompt = tree["prompt"]
    texts_ = sorted(r["text"] for r in prompt["replies"])
    # "a" had two same-role continuations: each gets a joined copy, so no context is lost.
    assert texts_ == ["first part\n\nanother ending", "first part\n\nsecond part"]
    assert skipped["tool call"] == 1 and skipped["consecutive assistant messages joined"] == 2


def test_cli_reads_each_format(tmp_path: Path):
    for source in (CHATGPT, OPENWEBUI, LIBRECHAT_FLAT, FIXTURES / "sharegpt.jsonl"):
        out = tmp_path / f"{source.stem}.jsonl"
        done = run_cli("paths", "export", source, "-o", out, "--strategy", "best")
        assert done.returncode == 0, done.stderr
        assert out.read_bytes().count(b"\n") >= 1
    done = run_cli("pairs", "export", CHATGPT, "-o", tmp_path / "p.jsonl", "--rank-shown-branch")
    assert done.returncode == 0 and "wrote 1 records" in done.stderr
