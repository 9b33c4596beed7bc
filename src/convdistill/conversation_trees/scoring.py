"""Scores of assistant turns and of whole paths.

A turn's score comes from the human ranking of the reply among its siblings:

    rank_score = 1 - rank / (n - 1)      n ranked siblings, rank 0 best: 1.0 best ... 0.0 worst
    rank_score = 1.0                     the only reply (nothing to compare with)
    rank_score = 0.5                     an unranked reply among several (unknown)

Optional weights add label and emoji evidence (labels hold averages in [0, 1]):

    turn_score = rank_score
                 + sum(w_label * labels[label].value)
                 + w_emoji * (up - down) / (up + down + 1)

where ``up``/``down`` count the ``+1``/``-1`` emojis. A path's score is the mean of its assistant
turns' scores, so paths of different lengths compare fairly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import networkx as nx

from convdistill.conversation_trees.tree_graph import Message, TreeTables, tree_tables


@dataclass(frozen=True)
class ScoreWeights:
    labels: dict[str, float] = field(
        default_factory=dict
    )  # e.g. {"quality": 1.0, "toxicity": -1.0}
    emojis: float = 0.0


def rank_score(rank: int | None, replies: int, ranked_replies: int) -> float:
    """Of a reply of rank `rank` (None: unranked) among its parent's `replies`, of which
    `ranked_replies` are ranked."""
    if rank is None:
        return 1.0 if replies == 1 else 0.5
    if ranked_replies <= 1:
        return 1.0
    return max(0.0, 1.0 - rank / (ranked_replies - 1))


def turn_score(msg: Message, rank_part: float, weights: ScoreWeights) -> float:
    """A reply's rank score (`rank_score`) plus its weighted labels and emoji balance."""
    score = rank_part
    if weights.labels:
        labels = msg.get("labels") or {}
        for name, weight in weights.labels.items():
            value = (labels.get(name) or {}).get("value")
            if value is not None:
                score += weight * value
    if weights.emojis:
        emojis = msg.get("emojis") or {}
        up, down = emojis.get("+1", 0), emojis.get("-1", 0)
        score += weights.emojis * (up - down) / (up + down + 1)
    return score


def path_score(graph: nx.DiGraph, message_ids: Sequence[str], weights: ScoreWeights) -> float:
    return TreeScorer(graph, weights).path_score(message_ids)


class TreeScorer:
    """Path scores of one tree, each turn scored once: paths of a tree share most of their turns."""

    def __init__(self, graph: nx.DiGraph, weights: ScoreWeights, tables: TreeTables | None = None):
        self.graph = graph
        self.weights = weights
        self._turns: dict[str, float] = {}
        self._ranked: dict[str, int] = {}  # parent -> how many of its replies are ranked
        self._nodes, self._succ = tables or tree_tables(graph)

    def _turn_score(self, mid: str, parent: str) -> float:
        nodes, replies = self._nodes, self._succ[parent]
        ranked = self._ranked.get(parent)
        if ranked is None:
            ranked = self._ranked[parent] = sum(1 for r in replies if nodes[r].get("rank") is not None)
        msg = nodes[mid]
        return turn_score(msg, rank_score(msg.get("rank"), len(replies), ranked), self.weights)

    def path_score(self, message_ids: Sequence[str]) -> float:
        nodes, turns = self._nodes, self._turns
        total, count = 0.0, 0
        for i in range(1, len(message_ids)):
            mid = message_ids[i]
            if nodes[mid]["role"] != "assistant":
                continue
            score = turns.get(mid)
            if score is None:
                score = turns[mid] = self._turn_score(mid, message_ids[i - 1])
            total += score
            count += 1
        return total / count if count else 0.0
