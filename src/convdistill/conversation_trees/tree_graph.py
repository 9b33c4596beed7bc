"""One conversation tree as a networkx DiGraph, built and checked without recursion.

Nodes are message ids; a node's attributes are the message's export fields (all of them, unknown
ones too, ``replies`` excepted); edges go parent -> reply. Graph attributes hold the tree's own
fields (``message_tree_id``, ``tree_state``, ``origin``, ...) and ``root``, the prompt's id.

Successors are kept in *export order* (the order of ``replies`` in a nested file; created date,
then row order, in a flat file) because Open-Assistant's own selection depends on it (see
``oasst_compat``). Our own strategies sort siblings by rank instead (``ranked_replies``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import networkx as nx

from convdistill.conversation_trees.schema import (
    PROMPTER,
    message_type_error,
    tree_type_error,
)
from convdistill.errors import BadInput

Message = dict[str, Any]


class TreeError(BadInput):
    """A tree that breaks the schema. ``message_id`` names the offending message when known."""

    def __init__(self, reason: str, message_id: str | None = None, kind: str = "schema"):
        super().__init__(reason)
        self.reason = reason
        self.message_id = message_id
        self.kind = kind


def _check_message(msg: Any, parent: Message | None) -> Message:
    if not isinstance(msg, dict):
        raise TreeError(f"a message must be an object, got {type(msg).__name__}")
    problem = message_type_error(msg)
    if problem:
        raise TreeError(problem, msg.get("message_id") if isinstance(msg, dict) else None)
    if parent is not None:
        if msg["role"] == parent["role"]:
            raise TreeError(
                f"roles do not alternate: a {msg['role']} message replies to a {parent['role']}",
                msg["message_id"],
                kind="roles",
            )
    elif msg["role"] != PROMPTER:
        raise TreeError(
            "the root message must have role 'prompter'", msg["message_id"], kind="roles"
        )
    return msg


def tree_from_nested(obj: dict[str, Any]) -> nx.DiGraph:
    """Build the DiGraph of one nested-tree export object; raise TreeError on any problem."""
    problem = tree_type_error(obj)
    if problem:
        raise TreeError(problem)
    prompt = obj["prompt"]
    graph = nx.DiGraph(**{k: v for k, v in obj.items() if k != "prompt"})
    root = _check_message(prompt, None)
    tree_id = obj.get("message_tree_id")
    if tree_id is not None and root["message_id"] != tree_id:
        # In Open-Assistant the tree id is the prompt's id; a mismatch means a damaged record.
        raise TreeError(
            f"message_tree_id {tree_id!r} differs from the prompt's message_id", root["message_id"]
        )
    graph.graph["root"] = root["message_id"]
    # Collected first, then added in one bulk call: add_edges_from keeps insertion order, so each
    # message's successors come out in export order.
    messages: list[Message] = []  # in visiting order
    edges: list[tuple[str, str]] = []
    seen: set[str] = set()
    # An explicit stack instead of recursion: a tree may be hundreds of levels deep.
    stack: list[tuple[Message, str | None]] = [(root, None)]
    while stack:
        msg, pid = stack.pop()
        mid = msg["message_id"]
        if mid in seen:
            raise TreeError(f"duplicate message_id {mid!r}", mid, kind="duplicate_id")
        seen.add(mid)
        messages.append(msg)  # its fields are copied into the graph below, less `replies`
        replies = msg.get("replies")
        if pid is not None:
            if msg.get("parent_id") not in (None, pid):
                raise TreeError(
                    f"parent_id {msg['parent_id']!r} does not match "
                    f"the enclosing message {pid!r}",
                    mid,
                )
            edges.append((pid, mid))
        if replies:
            if not isinstance(replies, list):
                raise TreeError("field 'replies' must be a list", mid)
            # Reversed so that popping visits replies in export order: each parent's edges are
            # then added in that order, which is the successor order networkx keeps.
            stack.extend((_check_message(reply, msg), mid) for reply in reversed(replies))
    # The edges create the nodes in visiting order (a parent before its replies); the messages'
    # fields then go into the attribute dicts networkx made for them.
    graph.add_edges_from(edges)
    if not edges:
        graph.add_node(root["message_id"])
    # (in the same order as `messages`: each node was created by its first edge, in visiting order)
    for msg, (_, attrs) in zip(messages, graph.nodes(data=True), strict=True):
        attrs.update(msg)
        attrs.pop("replies", None)
    return graph


def tree_from_messages(
    tree_fields: dict[str, Any], root: Message, children: dict[str, list[Message]]
) -> nx.DiGraph:
    """Build the DiGraph of a tree given as a root and a parent id -> ordered replies map.

    Used by the flat reader, which has already grouped rows and resolved orphans and cycles.
    """
    obj = dict(tree_fields)
    # A shallow nested view, built iteratively, so both formats go through one validator.
    view_root = dict(root)
    stack = [view_root]
    while stack:
        node = stack.pop()
        kids = [dict(c) for c in children.get(node["message_id"], ())]
        if kids:
            node["replies"] = kids
            stack.extend(kids)
    obj["prompt"] = view_root
    return tree_from_nested(obj)


def root_id(graph: nx.DiGraph) -> str:
    return graph.graph["root"]


def tree_id(graph: nx.DiGraph) -> str:
    return graph.graph.get("message_tree_id") or graph.graph["root"]


def message(graph: nx.DiGraph, mid: str) -> Message:
    return graph.nodes[mid]


def replies(graph: nx.DiGraph, mid: str) -> list[str]:
    """Reply ids in export order."""
    return list(graph.successors(mid))


class TreeTables(NamedTuple):
    """One tree as two plain dicts, for the loops that visit every message (paths, selection,
    scoring, stats). A NodeView or AdjacencyView lookup is a Python call (the latter builds a view
    object each time); these are made once per tree from networkx's public iterators, and made
    once per tree only: the path export passes them down (RESULTS.md has the measurement)."""

    messages: Mapping[str, Message]  # id -> fields; the tree's own dicts, so an edit changes the tree
    replies: Mapping[str, Mapping[str, Any]]  # id -> its replies' ids in export order (len: how many)


def tree_tables(graph: nx.DiGraph) -> TreeTables:
    return TreeTables(dict(graph.nodes(data=True)), dict(graph.adjacency()))


def _sibling_key(msg: Message) -> tuple[int, bool, str, str]:
    rank = msg.get("rank")
    return (
        rank if isinstance(rank, int) else 1 << 30,
        # Chat exports: among unranked siblings, the reply the interface showed comes first, so
        # that the `best` path is the branch the person saw. Open-Assistant messages have no
        # `shown`, and their order is unchanged.
        not msg.get("shown"),
        msg.get("created_date") or "",
        msg["message_id"],
    )


def ranked_replies(tables: TreeTables, mid: str) -> list[str]:
    """Reply ids best first: by rank (unranked last), then shown, then creation date, then id.

    This order does not depend on how the file was written, so every strategy built on it gives
    the same paths for a nested file and for the same trees as shuffled flat messages.
    """
    nodes, kids = tables.messages, tables.replies[mid]
    if len(kids) < 2:
        return list(kids)
    return sorted(kids, key=lambda c: _sibling_key(nodes[c]))
