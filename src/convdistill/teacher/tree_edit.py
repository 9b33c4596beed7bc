"""New teacher-written nodes in a tree: ids, fields, and the history a request shows.

A new message's id is derived from (tree, parent, operation, index), so a rerun or a resumed run
adds exactly the same nodes, and an extended export is byte-for-byte reproducible.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

import networkx as nx

from convdistill.conversation_trees.records import CHAT_ROLE
from convdistill.conversation_trees.tree_graph import tree_id

_NAMESPACE = uuid.UUID("6f1d2c3e-8a4b-5c6d-9e0f-a1b2c3d4e5f6")


def derived_id(graph: nx.DiGraph, parent_id: str, operation: str, index: int) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{tree_id(graph)}/{parent_id}/{operation}/{index}"))


def derived_seed(seed: int, *parts: object) -> int:
    """A per-request seed: the same request in every run, different requests differ."""
    digest = hashlib.blake2b(":".join(map(str, (seed, *parts))).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


def history(graph: nx.DiGraph, ids: list[str]) -> list[tuple[str, str]]:
    nodes = graph.nodes
    return [(CHAT_ROLE[nodes[m]["role"]], nodes[m]["text"]) for m in ids]


@dataclass(frozen=True)
class NewMessage:
    message_id: str
    parent_id: str
    role: str  # prompter | assistant
    text: str
    model_name: str
    created_date: str

    def fields(self, lang: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "message_id": self.message_id,
            "parent_id": self.parent_id,
            "created_date": self.created_date,
            "text": self.text,
            "role": self.role,
        }
        if lang is not None:
            out["lang"] = lang
        out.update({"deleted": False, "synthetic": True, "model_name": self.model_name})
        return out


def add_messages(graph: nx.DiGraph, messages: list[NewMessage]) -> int:
    """Add new nodes in order (a parent before its replies); returns how many were new."""
    added = 0
    for msg in messages:
        if msg.message_id in graph:
            continue  # already there from an earlier run over the same tree
        lang = graph.nodes[msg.parent_id].get("lang")
        graph.add_node(msg.message_id, **msg.fields(lang))
        graph.add_edge(msg.parent_id, msg.message_id)
        added += 1
    return added
