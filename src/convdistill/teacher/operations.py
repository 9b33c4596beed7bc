"""The three teacher operations on one tree: extend, regenerate, rank.

Each plans its work from the tree alone, asks the teacher (through the cached client), and only
then changes the tree, in a fixed order: concurrent answers arriving in any order still give the
same tree. A failed request drops only what depends on it (a simulated user turn is added only
together with the teacher's answer), so every output tree is a valid export tree.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

import networkx as nx

from convdistill.conversation_trees.paths import Strategy, tree_paths
from convdistill.conversation_trees.selection import Selection, kept_messages
from convdistill.conversation_trees.tree_graph import root_id, tree_tables
from convdistill.teacher.client import (
    Answer,
    BudgetExhausted,
    ChatRequest,
    RequestFailed,
    RequestPending,
    TeacherClient,
)
from convdistill.teacher.prompt_templates import PromptSet
from convdistill.teacher.ranking import parse_ranking, rank_request, ranking_validator
from convdistill.teacher.simulator import (
    END_MARKER,
    clean_user_turn,
    pick_persona,
    simulator_request,
)
from convdistill.teacher.tree_edit import (
    NewMessage,
    add_messages,
    derived_id,
    derived_seed,
    history,
)

Operation = Literal["extend", "regenerate", "rank"]


@dataclass(frozen=True)
class TeacherSettings:
    operation: Operation = "extend"
    turns: int = 2  # extend: simulated exchanges per thread
    answers: int = 1  # regenerate: teacher answers per user turn
    strategy: Strategy = "best"
    selection: Selection = field(default_factory=lambda: Selection(min_assistant_turns=0))
    seed: int = 0
    temperature: float = 0.7
    max_tokens: int = 256  # per teacher answer
    simulator_max_tokens: int = 96


@dataclass
class OperationReport:
    trees_changed: int = 0
    messages_added: Counter = field(default_factory=Counter)  # role -> count
    leaves_answered: int = 0
    exchanges_added: int = 0
    ended_by_simulator: int = 0
    groups_ranked: int = 0
    failures: list[str] = field(default_factory=list)
    stopped_by_budget: bool = False
    waiting: int = 0  # work that waits for a batch file's answers (`--batch-out`)

    def failed(self, what: str, exc: RequestFailed) -> None:
        if isinstance(exc, RequestPending):
            self.waiting += 1
        else:
            self.failures.append(f"{what}: {exc}")


def plan_threads(graph: nx.DiGraph, settings: TeacherSettings) -> list[list[str]]:
    """Threads to continue: the strategy's paths, open ends kept, one per leaf."""
    seen, out = set(), []
    for path in tree_paths(graph, settings.selection, settings.strategy, open_ends=True):
        if path.message_ids[-1] not in seen:
            seen.add(path.message_ids[-1])
            out.append(list(path.message_ids))
    return out


def plan_user_turns(graph: nx.DiGraph, settings: TeacherSettings) -> list[list[str]]:
    """Histories ending on each user turn of the selected paths, once each."""
    nodes, seen, out = graph.nodes, set(), []
    for thread in plan_threads(graph, settings):
        for i, mid in enumerate(thread):
            if nodes[mid]["role"] == "prompter" and mid not in seen:
                seen.add(mid)
                out.append(thread[: i + 1])
    return out


def plan_unranked_groups(graph: nx.DiGraph, settings: TeacherSettings) -> list[tuple[str, list[str]]]:
    """(prompter message, its kept replies) where there are two or more replies, none ranked."""
    kept = kept_messages(graph, settings.selection)
    nodes, succ = tree_tables(graph)
    order = _depth_first_index(graph)
    groups = []
    for mid in sorted(kept, key=order.__getitem__):
        if nodes[mid]["role"] != "prompter":
            continue
        replies = [c for c in succ[mid] if c in kept]
        if len(replies) >= 2 and all(nodes[c].get("rank") is None for c in replies):
            groups.append((mid, replies))
    return groups


def has_work(graph: nx.DiGraph, settings: TeacherSettings) -> bool:
    if settings.operation == "rank":
        return bool(plan_unranked_groups(graph, settings))
    return bool(plan_threads(graph, settings))


class TreeJob:
    """One tree's work under one operation."""

    def __init__(
        self,
        graph: nx.DiGraph,
        client: TeacherClient,
        prompts: PromptSet,
        settings: TeacherSettings,
        report: OperationReport,
    ):
        self.graph = graph
        self.client = client
        self.prompts = prompts
        self.settings = settings
        self.report = report
        self.model = client.endpoint.model

    async def run(self) -> None:
        op = self.settings.operation
        if op == "extend":
            changes = await self._gather(self._extend_thread(t) for t in plan_threads(self.graph, self.settings))
        elif op == "regenerate":
            changes = await self._gather(self._regenerate_turn(m) for m in plan_user_turns(self.graph, self.settings))
        else:
            changes = await self._gather(
                self._rank_group(p, replies) for p, replies in plan_unranked_groups(self.graph, self.settings)
            )
            for ranks in changes:
                for mid, rank in ranks:
                    self.graph.nodes[mid]["rank"] = rank
                    self.graph.nodes[mid]["ranked_by"] = self.model  # marks an AI ranking
            if any(changes):
                self.report.trees_changed += 1
            return
        added = 0
        for messages in changes:  # in plan order, whatever order the answers came in
            added += add_messages(self.graph, messages)
            for msg in messages:
                self.report.messages_added[msg.role] += 1
        if added:
            self.report.trees_changed += 1

    async def _gather(self, coroutines) -> list:
        results = await asyncio.gather(*coroutines, return_exceptions=True)
        out = []
        for result in results:
            if isinstance(result, BudgetExhausted):
                self.report.stopped_by_budget = True
                raise result
            if isinstance(result, BaseException):
                raise result
            out.append(result)
        return out

    # -- work ----------------------------------------------------------------------------------
    async def _teacher_answer(self, ids_history: list[tuple[str, str]], key: str) -> Answer | None:
        messages = (("system", self.prompts.teacher_system), *ids_history)
        request = ChatRequest(
            messages,
            max_tokens=self.settings.max_tokens,
            temperature=self.settings.temperature,
            seed=derived_seed(self.settings.seed, key, "teacher"),
            purpose="teacher",
        )
        try:
            return await self.client.complete(request)
        except RequestFailed as exc:
            self.report.failed(f"teacher answer at {key}", exc)
            return None

    async def _extend_thread(self, thread: list[str]) -> list[NewMessage]:
        graph, nodes = self.graph, self.graph.nodes
        conversation = history(graph, thread)
        parent = thread[-1]
        new: list[NewMessage] = []
        if nodes[parent]["role"] == "prompter":
            answer = await self._teacher_answer(conversation, parent)
            if answer is None:
                return new
            msg = NewMessage(
                derived_id(graph, parent, "answer", 0),
                parent,
                "assistant",
                answer.text,
                self.model,
                answer.created_date,
            )
            new.append(msg)
            conversation.append(("assistant", answer.text))
            parent = msg.message_id
            self.report.leaves_answered += 1
        persona, style = pick_persona(self.prompts, self.settings.seed, f"{root_id(graph)}/{thread[-1]}")
        for turn in range(self.settings.turns):
            request = simulator_request(
                conversation,
                self.prompts,
                persona,
                style,
                derived_seed(self.settings.seed, parent, "simulator"),
                self.settings.simulator_max_tokens,
            )
            try:
                user = await self.client.complete(request, validate=clean_user_turn)
            except RequestFailed as exc:
                self.report.failed(f"simulated user turn after {parent}", exc)
                break
            if user.text == END_MARKER:
                self.report.ended_by_simulator += 1
                break
            user_msg = NewMessage(
                derived_id(graph, parent, "user", turn),
                parent,
                "prompter",
                user.text,
                self.model,
                user.created_date,
            )
            answer = await self._teacher_answer([*conversation, ("user", user.text)], user_msg.message_id)
            if answer is None:
                break  # the user turn goes too: no unanswered teacher-made turns
            reply = NewMessage(
                derived_id(graph, user_msg.message_id, "answer", 0),
                user_msg.message_id,
                "assistant",
                answer.text,
                self.model,
                answer.created_date,
            )
            new.extend((user_msg, reply))
            conversation.extend((("user", user.text), ("assistant", answer.text)))
            parent = reply.message_id
            self.report.exchanges_added += 1
        return new

    async def _regenerate_turn(self, thread: list[str]) -> list[NewMessage]:
        """The teacher's own answers to a user turn, as new siblings of the human answers."""
        graph = self.graph
        user = thread[-1]
        conversation = history(graph, thread)
        new = []
        for index in range(self.settings.answers):
            mid = derived_id(graph, user, "regenerate", index)
            if mid in graph:
                continue  # written by an earlier run over this export
            answer = await self._teacher_answer(conversation, f"{user}/regenerate/{index}")
            if answer is not None:
                new.append(NewMessage(mid, user, "assistant", answer.text, self.model, answer.created_date))
        return new

    async def _rank_group(self, parent: str, replies: list[str]) -> list[tuple[str, int]]:
        graph = self.graph
        thread = _thread_to(graph, parent)
        request = rank_request(
            history(graph, thread),
            [graph.nodes[r]["text"] for r in replies],
            self.prompts,
            derived_seed(self.settings.seed, parent, "rank"),
        )
        try:
            answer = await self.client.complete(request, validate=ranking_validator(len(replies)))
        except RequestFailed as exc:
            self.report.failed(f"ranking of replies to {parent}", exc)
            return []
        order = parse_ranking(answer.text, len(replies)) or []
        self.report.groups_ranked += 1
        return [(replies[index], rank) for rank, index in enumerate(order)]


def _thread_to(graph: nx.DiGraph, mid: str) -> list[str]:
    """The messages from the root to `mid` (a tree has one path)."""
    return nx.shortest_path(graph, root_id(graph), mid)


def _depth_first_index(graph: nx.DiGraph) -> dict[str, int]:
    """Each message's place in a depth-first walk from the root, replies in export order."""
    return {mid: index for index, mid in enumerate(nx.dfs_preorder_nodes(graph, root_id(graph)))}
