"""Ranked dialog paths: root-to-leaf threads of a tree, chosen by a strategy, each with a score.

Strategies (all apply the Selection's filters first; trailing prompter messages are dropped
because there is no reply to train on):

* ``all``:    every root-to-leaf thread, each once, best-ranked branches first;
* ``best``:   one per tree: the best-ranked reply at each branch, the first answered prompter
              follow-up at each assistant;
* ``top-k``:  like ``all`` with only assistants of rank < k (set ``Selection.top_k``);
* ``sample``: n paths over the whole input, drawn without replacement with probability
              proportional to exp(score / temperature), seeded (see ``PathSampler``).
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

import networkx as nx

from convdistill.conversation_trees.scoring import ScoreWeights, TreeScorer
from convdistill.conversation_trees.selection import Selection, kept_messages
from convdistill.conversation_trees.tree_graph import Message, TreeTables, ranked_replies, root_id, tree_tables
from convdistill.errors import BadRecipe

Strategy = Literal["all", "best", "top-k", "sample"]
STRATEGIES: tuple[str, ...] = ("all", "best", "top-k", "sample")


@dataclass(frozen=True)
class DialogPath:
    tree: nx.DiGraph
    message_ids: tuple[str, ...]
    score: float
    # The messages' fields (the tree's own dicts), parallel to message_ids: every record written
    # from a path reads them, so they are looked up once, when the path is made.
    messages: tuple[Message, ...] = field(compare=False, repr=False)

    @property
    def assistant_turns(self) -> int:
        return sum(1 for m in self.messages if m["role"] == "assistant")


def _trim_trailing_prompter(nodes: Mapping[str, Message], ids: list[str]) -> list[str]:
    end = len(ids)
    while end and nodes[ids[end - 1]]["role"] == "prompter":
        end -= 1
    return ids[:end]


def _thread_ids(graph: nx.DiGraph, tables: TreeTables, kept: set[str], trim: bool = True) -> Iterator[list[str]]:
    """Every root-to-leaf thread over kept messages, trimmed, without duplicates, no recursion."""
    root = root_id(graph)
    if root not in kept:
        return
    emitted_ends: set[str] = set()  # a trimmed thread is identified by its last message
    nodes = tables.messages
    stack: list[tuple[str, int]] = [(root, 0)]
    thread: list[str] = []
    while stack:
        mid, depth = stack.pop()
        del thread[depth:]
        thread.append(mid)
        kids = [c for c in ranked_replies(tables, mid) if c in kept]
        if kids:
            stack.extend((c, depth + 1) for c in reversed(kids))
            continue
        if not trim:
            yield list(thread)
            continue
        trimmed = _trim_trailing_prompter(nodes, thread)
        if len(trimmed) >= 2 and trimmed[-1] not in emitted_ends:
            emitted_ends.add(trimmed[-1])
            yield trimmed


def _best_thread(graph: nx.DiGraph, tables: TreeTables, kept: set[str], trim: bool = True) -> list[str]:
    root = root_id(graph)
    if root not in kept:
        return []
    nodes, succ = tables
    thread = [root]
    while True:
        kids = [c for c in ranked_replies(tables, thread[-1]) if c in kept]
        if not kids:
            break
        if nodes[thread[-1]]["role"] == "assistant":
            # Prompter follow-ups are never ranked: prefer one that got an answer.
            answered = [c for c in kids if any(g in kept for g in succ[c])]
            # Chat exports: the follow-up the interface showed wins, answered or not, so that
            # the best path is the shown branch (trimmed to its last reply).
            shown = [c for c in kids if nodes[c].get("shown")]
            kids = shown or answered or kids
        thread.append(kids[0])
    return _trim_trailing_prompter(nodes, thread) if trim else thread


def tree_paths(
    graph: nx.DiGraph,
    selection: Selection,
    strategy: Strategy = "all",
    weights: ScoreWeights | None = None,
    open_ends: bool = False,
) -> Iterator[DialogPath]:
    """Paths of one tree under a strategy (``sample`` yields every candidate; see PathSampler).

    ``open_ends=True`` keeps trailing prompter messages (and a lone unanswered prompt): the
    threads a teacher continues, rather than the paths a student trains on.
    """
    weights = weights or ScoreWeights()
    if strategy == "top-k" and selection.top_k is None:
        raise BadRecipe("strategy 'top-k' needs top_k (--top-k K)")
    tables = tree_tables(graph)  # made once here, read by every step below
    kept = kept_messages(graph, selection, tables)
    if not kept:
        return
    threads: Iterable[list[str]]
    trim = not open_ends
    if strategy == "best":
        best = _best_thread(graph, tables, kept, trim)
        threads = [best] if len(best) >= (2 if trim else 1) else []
    elif strategy in ("all", "top-k", "sample"):
        threads = _thread_ids(graph, tables, kept, trim)
    else:
        raise BadRecipe(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    nodes = tables.messages
    scorer = TreeScorer(graph, weights, tables)
    for ids in threads:
        messages = [nodes[m] for m in ids]
        replies = [m for m in messages if m["role"] == "assistant"]
        turns = len(replies)
        if turns < selection.min_assistant_turns and not (open_ends and turns == 0):
            continue
        if selection.max_assistant_turns is not None and turns > selection.max_assistant_turns:
            continue
        if (selection.min_labels or selection.max_labels) and not all(map(selection.keeps_labels, replies)):
            continue
        yield DialogPath(graph, tuple(ids), scorer.path_score(ids), tuple(messages))


class PathSampler:
    """Draw n paths from a stream, without replacement, weighted by exp(score / temperature).

    Weighted reservoir sampling (Efraimidis and Spirakis): each path gets the key
    u ** (1 / weight) with u uniform in (0, 1), and the n largest keys win. Memory holds n paths
    whatever the input size, and the same seed over the same input gives the same draw.
    """

    def __init__(self, n: int, seed: int = 0, temperature: float = 1.0):
        if n < 1:
            raise BadRecipe("n must be at least 1")
        if temperature <= 0:
            raise BadRecipe("temperature must be positive")
        self.n = n
        self.temperature = temperature
        self.rng = random.Random(seed)
        self._heap: list[tuple[float, int, DialogPath]] = []
        self._seen = 0

    def offer(self, path: DialogPath) -> None:
        self._seen += 1
        u = self.rng.random() or 1e-300
        # log of u ** (1/w) with w = exp(score / T): stable for any score.
        key = math.log(u) / math.exp(path.score / self.temperature)
        item = (key, self._seen, path)
        if len(self._heap) < self.n:
            heapq.heappush(self._heap, item)
        elif key > self._heap[0][0]:
            heapq.heapreplace(self._heap, item)

    def result(self) -> list[DialogPath]:
        """The drawn paths, most likely first."""
        return [p for _, _, p in sorted(self._heap, key=lambda t: (-t[0], t[1]))]
