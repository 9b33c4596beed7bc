"""Implicit ranks from a chat interface: the reply the person kept reading is ranked first.

When a user regenerates an answer, the interface shows one of the sibling replies and the
conversation goes on from it. That choice is a (weak) preference, and ``rank_shown_branch``
turns it into Open-Assistant ranks so that the ordinary pair code makes DPO pairs of it: among
sibling assistant replies that no human ranked, the one on the shown branch (``shown: true``)
gets rank 0 and the others rank 1 (so they are never paired with each other). Each such reply is
marked ``ranked_by: "shown-branch"``, which pair records carry, so that these implicit pairs can
always be told from human rankings. Edited user turns are prompter siblings and are never
ranked, as in Open-Assistant.
"""

from __future__ import annotations

import networkx as nx

from convdistill.conversation_trees.tree_graph import tree_tables

SHOWN_BRANCH = "shown-branch"


def rank_shown_branch(graph: nx.DiGraph) -> int:
    """Rank regenerated siblings by the shown branch, in place; returns how many were ranked."""
    nodes, succ = tree_tables(graph)
    ranked = 0
    for mid, attrs in nodes.items():
        if attrs.get("role") != "prompter":
            continue
        replies = [c for c in succ[mid] if nodes[c].get("role") == "assistant"]
        if len(replies) < 2 or any(nodes[c].get("rank") is not None for c in replies):
            continue  # one reply, or already ranked by people: nothing implicit to add
        if not any(nodes[c].get("shown") for c in replies):
            continue  # the interface showed none of them (a branch off the shown path)
        for child in replies:
            nodes[child]["rank"] = 0 if nodes[child].get("shown") else 1
            nodes[child]["ranked_by"] = SHOWN_BRANCH
            ranked += 1
    return ranked
