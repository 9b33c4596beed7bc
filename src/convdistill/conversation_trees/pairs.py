"""Ranked sibling pairs for preference training (DPO).

At every prompter message with at least two ranked assistant replies, the prompt is the whole
conversation from the root to that message, and replies are paired by rank (0 best):

* ``all``:          every (i, j) with rank_i < rank_j;
* ``adjacent``:     neighbours in rank order only (0-1, 1-2, ...);
* ``best-vs-rest``: the best reply against each other one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import networkx as nx

from convdistill.conversation_trees.selection import Selection, kept_messages
from convdistill.conversation_trees.tree_graph import root_id, tree_tables
from convdistill.errors import BadRecipe

Pairing = Literal["all", "adjacent", "best-vs-rest"]
PAIRINGS: tuple[str, ...] = ("all", "adjacent", "best-vs-rest")


@dataclass(frozen=True)
class RankedPrefix:
    """A conversation ending on a prompter message, with its ranked replies best first."""

    tree: nx.DiGraph
    prefix_ids: tuple[str, ...]
    reply_ids: tuple[str, ...]


@dataclass(frozen=True)
class PreferencePair:
    tree: nx.DiGraph
    prefix_ids: tuple[str, ...]
    chosen_id: str
    rejected_id: str


def pair_up(prefix: RankedPrefix, pairing: Pairing) -> Iterator[PreferencePair]:
    """Pairs of one ranked prefix. Replies of equal rank are never paired."""
    nodes = prefix.tree.nodes
    replies = prefix.reply_ids
    if pairing == "all":
        index_pairs = [(i, j) for i in range(len(replies)) for j in range(i + 1, len(replies))]
    elif pairing == "adjacent":
        index_pairs = [(i, i + 1) for i in range(len(replies) - 1)]
    elif pairing == "best-vs-rest":
        index_pairs = [(0, j) for j in range(1, len(replies))]
    else:
        raise BadRecipe(f"unknown pairing {pairing!r}; choose from {', '.join(PAIRINGS)}")
    for i, j in index_pairs:
        if nodes[replies[i]].get("rank") == nodes[replies[j]].get("rank"):
            continue
        yield PreferencePair(prefix.tree, prefix.prefix_ids, replies[i], replies[j])


def ranked_prefixes(graph: nx.DiGraph, selection: Selection) -> Iterator[RankedPrefix]:
    """Every prompter message, over kept messages, with at least two ranked kept replies."""
    kept = kept_messages(graph, selection)
    root = root_id(graph)
    if root not in kept:
        return
    nodes, succ = tree_tables(graph)
    stack: list[tuple[str, int]] = [(root, 0)]
    thread: list[str] = []
    while stack:
        mid, depth = stack.pop()
        del thread[depth:]
        thread.append(mid)
        kids = [c for c in succ[mid] if c in kept]
        if nodes[mid]["role"] == "prompter":
            ranked = sorted(
                (c for c in kids if nodes[c].get("rank") is not None),
                key=lambda c: nodes[c]["rank"],
            )
            if len(ranked) >= 2:
                yield RankedPrefix(graph, tuple(thread), tuple(ranked))
        stack.extend((c, depth + 1) for c in reversed(kids))


def tree_pairs(
    graph: nx.DiGraph, selection: Selection, pairing: Pairing = "all"
) -> Iterator[PreferencePair]:
    for prefix in ranked_prefixes(graph, selection):
        yield from pair_up(prefix, pairing)
