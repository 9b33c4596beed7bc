"""Write DiGraph trees back as Open-Assistant exports (nested trees or flat messages, gz or not).

What a reader kept, a writer gives back: read -> write -> read yields the same trees, fields,
unknown keys and reply order included.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import networkx as nx
import orjson

from convdistill.conversation_trees.tree_graph import replies, root_id, tree_tables
from convdistill.files import open_binary

ExportFormat = Literal["trees", "messages"]


def tree_to_nested(graph: nx.DiGraph) -> dict[str, Any]:
    """The nested export object of a tree, built without recursion."""
    nodes = graph.nodes
    root = root_id(graph)
    views: dict[str, dict[str, Any]] = {}
    stack = [root]
    while stack:
        mid = stack.pop()
        view = dict(nodes[mid])
        kids = replies(graph, mid)
        views[mid] = view
        # Leaves get an empty list, as Open-Assistant's exporter writes them.
        view["replies"] = kids  # ids for now, replaced by their views below
        stack.extend(kids)
    for view in views.values():
        view["replies"] = [views[c] for c in view["replies"]]
    tree = {k: v for k, v in graph.graph.items() if k != "root"}
    tree["prompt"] = views[root]
    return tree


def tree_to_messages(graph: nx.DiGraph) -> list[dict[str, Any]]:
    """Flat rows of a tree, parents before replies, each carrying the tree's id and state."""
    tree_fields = {
        k: graph.graph[k]
        for k in ("message_tree_id", "tree_state")
        if graph.graph.get(k) is not None
    }
    rows = []
    stack = [root_id(graph)]
    while stack:
        mid = stack.pop()
        rows.append({**graph.nodes[mid], **tree_fields})
        stack.extend(reversed(replies(graph, mid)))
    return rows


def nested_tree_bytes(graph: nx.DiGraph) -> bytes:
    """One line of a nested-trees file, serialised without recursion.

    orjson (like most JSON writers) stops at a nesting depth of a few hundred, and a tree nests
    two JSON levels per message; so each message is serialised flat and its replies are spliced
    in by hand.
    """
    nodes, succ = tree_tables(graph)
    head = orjson.dumps({k: v for k, v in graph.graph.items() if k != "root"})
    parts = [head[:-1] + (b"," if len(head) > 2 else b"") + b'"prompt":']
    stack: list[str | bytes] = [root_id(graph)]
    while stack:
        item = stack.pop()
        if isinstance(item, bytes):
            parts.append(item)
            continue
        attrs = orjson.dumps(nodes[item])
        parts.append(attrs[:-1] + (b"," if len(attrs) > 2 else b"") + b'"replies":[')
        stack.append(b"]}")
        kids = list(succ[item])
        for i in range(len(kids) - 1, -1, -1):
            stack.append(kids[i])
            if i:
                stack.append(b",")
    parts.append(b"}")
    return b"".join(parts)


def write_trees(path: str | Path, trees: Iterable[nx.DiGraph], fmt: ExportFormat = "trees") -> int:
    """Write trees to ``path`` in the given export format; returns the number of lines written."""
    lines = 0
    with open_binary(path, "wb") as out:
        for graph in trees:
            if fmt == "trees":
                out.write(nested_tree_bytes(graph) + b"\n")
                lines += 1
            else:
                for row in tree_to_messages(graph):
                    out.write(orjson.dumps(row) + b"\n")
                    lines += 1
    return lines
