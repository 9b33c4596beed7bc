"""Path and pair records: the stable formats that trainers read (see ARCHITECTURE.md).

Messages follow TRL's conversational format; Open-Assistant's ``prompter`` becomes ``user``.
Provenance travels beside the messages in parallel lists (``message_ids``, ``ranks``,
``synthetic``, ``model_names``) so that every record keeps one flat schema for parquet.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import networkx as nx
import orjson

from convdistill.conversation_trees.pairs import PreferencePair
from convdistill.conversation_trees.paths import DialogPath
from convdistill.conversation_trees.tree_graph import Message, tree_id

CHAT_ROLE = {"prompter": "user", "assistant": "assistant"}


def system_turn(graph: nx.DiGraph) -> list[dict[str, str]]:
    """The tree's system prompt as a leading message (chat exports carry one), or nothing.

    It lives on the tree, not as a message, because the export schema's roots are prompters.
    """
    system = graph.graph.get("system")
    return [{"role": "system", "content": system}] if isinstance(system, str) and system else []


def chat_messages(graph: nx.DiGraph, ids: Sequence[str]) -> list[dict[str, str]]:
    nodes = graph.nodes
    return system_turn(graph) + [_chat_message(nodes[m]) for m in ids]


def _chat_message(msg: Message) -> dict[str, str]:
    return {"role": CHAT_ROLE[msg["role"]], "content": msg["text"]}


def path_record(path: DialogPath, with_messages: bool = True) -> dict[str, Any]:
    graph, messages = path.tree, path.messages
    system = system_turn(graph)
    # A system turn has no message of its own: its entries keep the lists parallel to messages.
    lead = len(system)
    tid = tree_id(graph)
    record: dict[str, Any] = {"messages": system + [_chat_message(m) for m in messages]} if with_messages else {}
    return record | {
        "tree_id": tid,
        "message_ids": [f"{tid}/system"] * lead + list(path.message_ids),
        "score": round(path.score, 6),
        "lang": messages[0].get("lang"),
        "ranks": [None] * lead + [m.get("rank") for m in messages],
        "synthetic": [False] * lead + [bool(m.get("synthetic")) for m in messages],
        "model_names": [None] * lead + [m.get("model_name") for m in messages],
    }


class PathRecordEncoder:
    """JSON lines of path records, byte for byte ``orjson.dumps(path_record(path))``, faster.

    The paths of a tree share their prefixes, so each message is serialised once per tree and
    records are assembled from those pieces: the text of a long thread is not re-encoded for
    every branch below it.
    """

    def __init__(self) -> None:
        self._graph: nx.DiGraph | None = None
        self._pieces: dict[str, bytes] = {}
        self._system: list[bytes] = []

    def encode(self, path: DialogPath) -> bytes:
        graph = path.tree
        if graph is not self._graph:
            self._graph, self._pieces = graph, {}
            self._system = [orjson.dumps(m) for m in system_turn(graph)]
        pieces = self._pieces
        parts = list(self._system)
        for mid, msg in zip(path.message_ids, path.messages, strict=True):
            piece = pieces.get(mid)
            if piece is None:
                piece = pieces[mid] = orjson.dumps(_chat_message(msg))
            parts.append(piece)
        rest = path_record(path, with_messages=False)
        return b'{"messages":[' + b",".join(parts) + b"]," + orjson.dumps(rest)[1:] + b"\n"


def pair_record(pair: PreferencePair) -> dict[str, Any]:
    graph = pair.tree
    nodes = graph.nodes
    chosen, rejected = nodes[pair.chosen_id], nodes[pair.rejected_id]
    return {
        "prompt": chat_messages(graph, pair.prefix_ids),
        "chosen": [{"role": "assistant", "content": chosen["text"]}],
        "rejected": [{"role": "assistant", "content": rejected["text"]}],
        "tree_id": tree_id(graph),
        "parent_id": pair.prefix_ids[-1],
        "prompt_ids": [f"{tree_id(graph)}/system"] * len(system_turn(graph)) + list(pair.prefix_ids),
        "chosen_id": pair.chosen_id,
        "rejected_id": pair.rejected_id,
        "chosen_rank": chosen.get("rank"),
        "rejected_rank": rejected.get("rank"),
        "chosen_synthetic": bool(chosen.get("synthetic")),
        "rejected_synthetic": bool(rejected.get("synthetic")),
        "lang": graph.nodes[pair.prefix_ids[0]].get("lang"),
        # "shown-branch" for ranks implied by a chat interface (see shown_branch), else None.
        "ranked_by": chosen.get("ranked_by"),
    }
