"""Path and pair records: the stable formats that trainers read (see ARCHITECTURE.md).

Messages follow TRL's conversational format; Open-Assistant's ``prompter`` becomes ``user``.
Provenance travels beside the messages in parallel lists (``message_ids``, ``ranks``,
``synthetic``, ``model_names``) so that every record keeps one flat schema for parquet.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import networkx as nx

from convdistill.conversation_trees.pairs import PreferencePair
from convdistill.conversation_trees.paths import DialogPath
from convdistill.conversation_trees.tree_graph import tree_id

CHAT_ROLE = {"prompter": "user", "assistant": "assistant"}


def chat_messages(graph: nx.DiGraph, ids: Sequence[str]) -> list[dict[str, str]]:
    nodes = graph._node
    return [{"role": CHAT_ROLE[nodes[m]["role"]], "content": nodes[m]["text"]} for m in ids]


def _provenance(graph: nx.DiGraph, ids: Sequence[str]) -> dict[str, Any]:
    nodes = graph._node
    return {
        "ranks": [nodes[m].get("rank") for m in ids],
        "synthetic": [bool(nodes[m].get("synthetic")) for m in ids],
        "model_names": [nodes[m].get("model_name") for m in ids],
    }


def path_record(path: DialogPath) -> dict[str, Any]:
    graph = path.tree
    return {
        "messages": chat_messages(graph, path.message_ids),
        "tree_id": tree_id(graph),
        "message_ids": list(path.message_ids),
        "score": round(path.score, 6),
        "lang": graph._node[path.message_ids[0]].get("lang"),
        **_provenance(graph, path.message_ids),
    }


def pair_record(pair: PreferencePair) -> dict[str, Any]:
    graph = pair.tree
    nodes = graph._node
    chosen, rejected = nodes[pair.chosen_id], nodes[pair.rejected_id]
    return {
        "prompt": chat_messages(graph, pair.prefix_ids),
        "chosen": [{"role": "assistant", "content": chosen["text"]}],
        "rejected": [{"role": "assistant", "content": rejected["text"]}],
        "tree_id": tree_id(graph),
        "parent_id": pair.prefix_ids[-1],
        "prompt_ids": list(pair.prefix_ids),
        "chosen_id": pair.chosen_id,
        "rejected_id": pair.rejected_id,
        "chosen_rank": chosen.get("rank"),
        "rejected_rank": rejected.get("rank"),
        "chosen_synthetic": bool(chosen.get("synthetic")),
        "rejected_synthetic": bool(rejected.get("synthetic")),
        "lang": graph._node[pair.prefix_ids[0]].get("lang"),
    }
