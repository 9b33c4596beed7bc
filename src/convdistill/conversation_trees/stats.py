"""Corpus statistics of an export: what is in it, and how many paths each strategy would give."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import networkx as nx

from convdistill.conversation_trees.oasst_compat import DEFAULT_LANGS, compat_sft_threads
from convdistill.conversation_trees.pairs import ranked_prefixes
from convdistill.conversation_trees.paths import tree_paths
from convdistill.conversation_trees.selection import Selection
from convdistill.conversation_trees.tree_graph import root_id, tree_tables


@dataclass
class TreeStats:
    trees: int = 0
    messages: int = 0
    roles: Counter = field(default_factory=Counter)
    trees_by_lang: Counter = field(default_factory=Counter)
    messages_by_lang: Counter = field(default_factory=Counter)
    trees_by_state: Counter = field(default_factory=Counter)
    assistants_ranked: int = 0
    synthetic: int = 0
    deleted: int = 0
    depth_histogram: Counter = field(default_factory=Counter)  # tree depth (messages) -> trees
    branching_histogram: Counter = field(default_factory=Counter)  # replies -> non-leaf messages
    paths: Counter = field(default_factory=Counter)  # strategy -> paths
    ranked_prefixes: int = 0

    def add(self, graph: nx.DiGraph, selection: Selection) -> None:
        nodes, succ = tree_tables(graph)
        root = root_id(graph)
        self.trees += 1
        self.messages += len(nodes)
        self.trees_by_lang[nodes[root].get("lang") or "unknown"] += 1
        self.trees_by_state[graph.graph.get("tree_state") or "unknown"] += 1
        for msg in nodes.values():
            self.roles[msg["role"]] += 1
            self.messages_by_lang[msg.get("lang") or "unknown"] += 1
            if msg["role"] == "assistant" and msg.get("rank") is not None:
                self.assistants_ranked += 1
            self.synthetic += bool(msg.get("synthetic"))
            self.deleted += bool(msg.get("deleted"))
        for kids in succ.values():
            if kids:
                self.branching_histogram[len(kids)] += 1
        self.depth_histogram[_depth(succ, root)] += 1
        self.paths["all"] += sum(1 for _ in tree_paths(graph, selection, "all"))
        self.paths["best"] += sum(1 for _ in tree_paths(graph, selection, "best"))
        for k in (1, 2):
            top = replace(selection, top_k=k)
            self.paths[f"top-{k}"] += sum(1 for _ in tree_paths(graph, top, "top-k"))
        langs = selection.langs or DEFAULT_LANGS
        self.paths["oasst-compat"] += sum(1 for _ in compat_sft_threads(graph, None, langs))
        self.ranked_prefixes += sum(1 for _ in ranked_prefixes(graph, selection))

    @property
    def ranked_fraction(self) -> float:
        assistants = self.roles.get("assistant", 0)
        return self.assistants_ranked / assistants if assistants else 0.0

    def to_dict(self) -> dict[str, Any]:
        def sorted_counter(c: Counter) -> dict:
            return {str(k): v for k, v in sorted(c.items(), key=lambda kv: (-kv[1], str(kv[0])))}

        def hist(c: Counter) -> dict:
            return {str(k): c[k] for k in sorted(c)}

        return {
            "trees": self.trees,
            "messages": self.messages,
            "roles": dict(self.roles),
            "trees_by_lang": sorted_counter(self.trees_by_lang),
            "messages_by_lang": sorted_counter(self.messages_by_lang),
            "trees_by_state": sorted_counter(self.trees_by_state),
            "assistants_ranked": self.assistants_ranked,
            "ranked_fraction": round(self.ranked_fraction, 4),
            "synthetic": self.synthetic,
            "deleted": self.deleted,
            "depth_histogram": hist(self.depth_histogram),
            "branching_histogram": hist(self.branching_histogram),
            "paths_per_strategy": dict(self.paths),
            "ranked_prefixes": self.ranked_prefixes,
        }


def _depth(succ: Mapping[str, Iterable[str]], root: str) -> int:
    """Messages on the longest root-to-leaf thread, without recursion (`succ`: the tree's replies)."""
    deepest = 0
    stack = [(root, 1)]
    while stack:
        mid, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((c, depth + 1) for c in succ[mid])
    return deepest


def collect_stats(trees: Iterable[nx.DiGraph], selection: Selection | None = None) -> TreeStats:
    stats = TreeStats()
    selection = selection or Selection()
    for graph in trees:
        stats.add(graph, selection)
    return stats
