"""Which trees and messages a strategy may use: tree filters and message pruning.

A pruned message takes its whole subtree with it: a reply to a deleted message was written
against text the data set no longer holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import networkx as nx

from convdistill.conversation_trees.tree_graph import TreeTables, root_id, tree_tables

ReviewFilter = Literal["not-failed", "passed", "any"]


def lang_matches(lang: str | None, wanted: tuple[str, ...]) -> bool:
    """Prefix match on language subtags, case-insensitive: ``pt`` matches ``pt-BR`` and ``pt_br``.

    Open-Assistant's own filter compares whole strings, so ``pt`` misses ``pt-BR``; we do not.
    """
    if not wanted:
        return True
    if not lang:
        return False
    lang = lang.lower().replace("_", "-")
    for code in wanted:
        want = code.lower().replace("_", "-")
        if lang == want or lang.startswith(want + "-"):
            return True
    return False


@dataclass(frozen=True)
class Selection:
    """Filters shared by every path strategy and by preference pairs.

    Path-only filters (assistant turn counts, label thresholds) are applied to whole paths in
    ``paths``, so that a low-quality reply can still be the rejected side of a pair.
    """

    tree_states: tuple[str, ...] = ("ready_for_export",)  # empty: any state
    langs: tuple[str, ...] = ()  # empty: any language
    drop_synthetic: bool = False  # teacher turns are synthetic; keep them by default
    review: ReviewFilter = "not-failed"  # drop messages whose review_result is false
    top_k: int | None = None  # keep assistants of rank < k (and unranked only-children)
    min_assistant_turns: int = 1
    max_assistant_turns: int | None = None
    min_labels: dict[str, float] = field(default_factory=dict)  # e.g. {"quality": 0.5}
    max_labels: dict[str, float] = field(default_factory=dict)  # e.g. {"toxicity": 0.3}

    def keeps_tree(self, graph: nx.DiGraph) -> bool:
        if self.tree_states and graph.graph.get("tree_state") not in self.tree_states:
            return False
        return lang_matches(graph.nodes[root_id(graph)].get("lang"), self.langs)

    def keeps_message(self, msg: dict, siblings: int) -> bool:
        """Whether the selection keeps a message; `siblings`: its parent's number of replies
        (0 for the root)."""
        if msg.get("deleted"):
            return False
        if self.drop_synthetic and msg.get("synthetic"):
            return False
        review = msg.get("review_result")
        if self.review == "not-failed" and review is False:
            return False
        if self.review == "passed" and review is not True:
            return False
        if self.top_k is not None and msg["role"] == "assistant" and siblings:
            rank = msg.get("rank")
            if rank is None:
                # An unranked reply among several was never compared: not known to be top-k.
                if siblings > 1:
                    return False
            elif rank >= self.top_k:
                return False
        return True

    def keeps_labels(self, msg: dict) -> bool:
        labels = msg.get("labels") or {}
        for name, low in self.min_labels.items():
            value = (labels.get(name) or {}).get("value")
            if value is None or value < low:
                return False
        for name, high in self.max_labels.items():
            value = (labels.get(name) or {}).get("value")
            if value is not None and value > high:
                return False
        return True


def kept_messages(graph: nx.DiGraph, selection: Selection, tables: TreeTables | None = None) -> set[str]:
    """Ids of the messages the selection keeps (empty when the tree itself is filtered out).
    `tables`: the tree's, when the caller has made them."""
    if not selection.keeps_tree(graph):
        return set()
    root = root_id(graph)
    nodes, succ = tables or tree_tables(graph)
    if not selection.keeps_message(nodes[root], 0):
        return set()
    kept = {root}
    stack = [root]
    while stack:
        mid = stack.pop()
        kids = succ[mid]
        for child in kids:
            if selection.keeps_message(nodes[child], len(kids)):
                kept.add(child)
                stack.append(child)
    return kept
