"""Open-Assistant's own selection (model_training ``load_oasst_export``), reproduced exactly.

Use it to compare with published Open-Assistant models; our own strategies differ on purpose.
The rules, as their code applies them:

* trees: ``tree_state == "ready_for_export"``, the prompt's ``review_result`` is true, and the
  prompt's language is *exactly* one of the given codes (``pt`` does not match ``pt-BR``);
* a thread is dropped if any message in it is deleted or synthetic; with ``top_k``, also if an
  assistant has rank >= top_k, or is unranked while its parent has more than one reply;
* SFT: every thread of length > 1 ending on a leaf that is an assistant, or a prompter leaf that
  is its parent's *first* reply (in export order); a trailing prompter message is then removed;
* RM: every thread ending on a prompter message with at least two ranked replies; its ranked
  assistant replies, best first, are the candidates (their own deleted/synthetic flags are not
  looked at, as in their code).

Thread order follows the export's reply order (a depth-first walk), as theirs does.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import networkx as nx

from convdistill.conversation_trees.pairs import RankedPrefix
from convdistill.conversation_trees.tree_graph import TreeTables, root_id, tree_tables

DEFAULT_LANGS = ("en",)  # load_oasst_export's default


def compat_keeps_tree(graph: nx.DiGraph, langs: Sequence[str]) -> bool:
    prompt = graph.nodes[root_id(graph)]
    return (
        graph.graph.get("tree_state") == "ready_for_export"
        and bool(prompt.get("review_result"))
        and prompt.get("lang") in langs
    )


def _thread_ok(tables: TreeTables, thread: list[str], top_k: int | None) -> bool:
    nodes, succ = tables
    for i, mid in enumerate(thread):
        msg = nodes[mid]
        if msg.get("deleted") or msg.get("synthetic"):
            return False
        if top_k is not None and msg["role"] == "assistant":
            rank = msg.get("rank")
            if rank is None:
                if i > 0 and len(succ[thread[i - 1]]) > 1:
                    return False
            elif rank >= top_k:
                return False
    return True


def _threads(graph: nx.DiGraph, succ: Mapping[str, Mapping[str, Any]]) -> Iterator[list[str]]:
    """Every root-to-node thread, depth first in export order (their visit order)."""
    stack: list[tuple[str, int]] = [(root_id(graph), 0)]
    thread: list[str] = []
    while stack:
        mid, depth = stack.pop()
        del thread[depth:]
        thread.append(mid)
        yield thread
        stack.extend((c, depth + 1) for c in reversed(list(succ[mid])))


def compat_sft_threads(
    graph: nx.DiGraph, top_k: int | None = None, langs: Sequence[str] = DEFAULT_LANGS
) -> Iterator[tuple[str, ...]]:
    if not compat_keeps_tree(graph, langs):
        return
    tables = tree_tables(graph)
    nodes, succ = tables
    for thread in _threads(graph, succ):
        last = thread[-1]
        if len(thread) < 2 or succ[last]:
            continue
        first_reply = next(iter(succ[thread[-2]]))
        if nodes[last]["role"] != "assistant" and first_reply != last:
            continue
        if not _thread_ok(tables, thread, top_k):
            continue
        ids = tuple(thread[:-1]) if nodes[last]["role"] == "prompter" else tuple(thread)
        yield ids


def compat_rm_prefixes(
    graph: nx.DiGraph, top_k: int | None = None, langs: Sequence[str] = DEFAULT_LANGS
) -> Iterator[RankedPrefix]:
    if not compat_keeps_tree(graph, langs):
        return
    tables = tree_tables(graph)
    nodes, succ = tables
    for thread in _threads(graph, succ):
        last = thread[-1]
        if nodes[last]["role"] != "prompter":
            continue
        ranked = [c for c in succ[last] if nodes[c].get("rank") is not None]
        if len(ranked) < 2 or not _thread_ok(tables, thread, top_k):
            continue
        replies = sorted(
            (c for c in ranked if nodes[c]["role"] == "assistant"), key=lambda c: nodes[c]["rank"]
        )
        yield RankedPrefix(graph, tuple(thread), tuple(replies))
