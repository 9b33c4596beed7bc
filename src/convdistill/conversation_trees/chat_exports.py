"""Chat-UI histories as Open-Assistant trees: ChatGPT, Open WebUI, LibreChat, Chatbot UI, and
linear datasets (TRL ``messages`` records, ShareGPT ``conversations``).

A chat interface keeps a conversation as a tree too: regenerating an answer adds a sibling
assistant reply, editing a question adds a sibling user message, and the interface shows one
branch (ChatGPT's ``current_node``, Open WebUI's ``currentId``; LibreChat keeps no pointer and
shows the newest message's branch). Each format is parsed into the same small intermediate form
(``ChatConversation`` of ``ChatNode``), and ``conversation_trees`` turns that into nested
Open-Assistant tree objects, which the ordinary checker then builds into DiGraphs. So the rules
below hold for every source alike:

* parents are taken from each message's parent pointer, never from children lists (UIs are known
  to leave those stale); siblings are ordered by creation time, then input order;
* ``user`` -> ``prompter``, ``assistant`` -> ``assistant``; a system message before the first user
  message becomes the tree's ``system`` prompt (the path records' system turn); anything else
  (tool calls and results, code execution output, hidden or empty messages, non-text parts,
  system messages inside the conversation) is skipped and counted by reason, its replies
  re-attached to the nearest kept message;
* two kept messages of the same role in a row (an answer, a tool call, then more answer) are
  joined into one message, blank line between, so roles alternate as the schema requires;
* messages on the shown branch carry ``shown: true``; a reply cut short carries
  ``interrupted: true``; the tree carries its provenance (``source``, ``conversation_id``,
  ``title``) and each reply its ``model_name``;
* a conversation whose first question was edited has several first questions: the schema allows
  one root per tree, so it becomes one tree per version, sharing ``conversation_id``.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from convdistill.errors import BadInput

CHAT_FORMATS = ("chatgpt", "openwebui", "librechat", "trl-messages", "sharegpt", "chatbot-ui")
LIBRECHAT_NO_PARENT = "00000000-0000-0000-0000-000000000000"


class ConversationError(BadInput):
    """A conversation that cannot be made a tree; the reason names the message when it can."""


@dataclass
class ChatNode:
    id: str
    parent: str | None
    role: str  # user, assistant, system, tool
    text: str | None  # None or "" when nothing of the message can be carried
    skip: str | None = None  # why the message is skipped, when it is
    model: str | None = None
    created: float | None = None  # seconds since the epoch, for sibling order and dates
    interrupted: bool = False
    order: int = 0  # position in the input, the tie-breaker of sibling order


@dataclass
class ChatConversation:
    source: str
    id: str
    title: str | None
    nodes: list[ChatNode]
    current: str | None = None  # the message the interface showed last (None: newest leaf)
    skipped: Counter = field(default_factory=Counter)  # parts dropped inside kept messages


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC).isoformat()


def _seconds(value: Any) -> float | None:
    """Epoch seconds (or milliseconds, as some UIs write) or an ISO date -> epoch seconds."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return value / 1000 if value > 1e11 else float(value)
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        return parsed.timestamp()
    return None


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConversationError(f"{what} must be a non-empty string, got {value!r:.60}")
    return value


# -- ChatGPT conversations.json ---------------------------------------------------------------
def parse_chatgpt(obj: dict[str, Any], index: int) -> ChatConversation:
    """One element of ChatGPT's ``conversations.json``: a ``mapping`` of node id -> node
    (``message`` or null, ``parent``, ``children``) and ``current_node``."""
    mapping = obj.get("mapping")
    if not isinstance(mapping, dict):
        raise ConversationError("'mapping' must be an object of node id -> node")
    conv_id = obj.get("conversation_id") or obj.get("id") or f"chatgpt-{index}"
    conv = ChatConversation("chatgpt", str(conv_id), obj.get("title"), [], current=obj.get("current_node"))
    for order, (key, node) in enumerate(mapping.items()):
        if not isinstance(node, dict):
            raise ConversationError(f"node {key!r} must be an object")
        node_id = _str(node.get("id", key), "a node id")
        parent = node.get("parent")
        message = node.get("message")
        if message is None:  # the client-created root and similar placeholders
            conv.nodes.append(ChatNode(node_id, parent, "none", None, skip=None, order=order))
            continue
        if not isinstance(message, dict):
            raise ConversationError(f"node {node_id!r}: 'message' must be an object or null")
        author = message.get("author") or {}
        role = author.get("role") if isinstance(author, dict) else None
        metadata = message.get("metadata") or {}
        text, skip = _chatgpt_content(message.get("content"), conv)
        if role not in ("user", "assistant", "system", "tool"):
            skip = f"{role or 'unknown'} message"
        elif role == "tool":
            skip = "tool output"
        elif role == "assistant" and message.get("recipient") not in (None, "all"):
            skip = "tool call"
        elif metadata.get("is_visually_hidden_from_conversation") and not (text or "").strip():
            skip = f"hidden {role} message"
        finish = (metadata.get("finish_details") or {}).get("type")
        status = message.get("status")
        interrupted = role == "assistant" and (
            finish in ("interrupted", "max_tokens") or status in ("in_progress", "incomplete")
        )
        conv.nodes.append(
            ChatNode(
                node_id,
                parent,
                role or "unknown",
                text,
                skip=skip,
                model=metadata.get("model_slug") or obj.get("default_model_slug"),
                created=_seconds(message.get("create_time")),
                interrupted=interrupted,
                order=order,
            )
        )
    if len(conv.nodes) > 1 and all(node.parent is None for node in conv.nodes):
        _chain_unlinked(conv)
    return conv


def _chain_unlinked(conv: ChatConversation) -> None:
    """Some tools write ChatGPT conversations without ``parent``/``children`` links. The messages
    then form one thread, in creation order when every message has a time, else in the mapping's
    order; a user message left without a reply at the end is dropped and counted."""
    messages = [n for n in conv.nodes if n.role != "none"]
    if all(n.created is not None for n in messages):
        messages.sort(key=lambda n: (n.created, n.order))
    conv.nodes = messages  # the placeholders carried nothing but the links there are not
    for parent, node in itertools.pairwise(messages):
        node.parent = parent.id
    kept = [n for n in messages if n.skip is None and (n.text or "").strip()]
    if len(kept) > 1 and kept[-1].role == "user":
        kept[-1].skip = "trailing user message without a reply"
    if conv.current not in {n.id for n in messages}:
        conv.current = messages[-1].id if messages else None


def _chatgpt_content(content: Any, conv: ChatConversation) -> tuple[str | None, str | None]:
    """(text, skip reason). Text and multimodal text keep their string parts; code and
    execution output, browsing displays, reasoning and the like are skipped by type."""
    if not isinstance(content, dict):
        return None, "message without content"
    kind = content.get("content_type")
    if kind == "text":
        parts = content.get("parts") or []
        strings = [p for p in parts if isinstance(p, str)]
        if len(strings) < len(parts):
            conv.skipped["non-text part"] += len(parts) - len(strings)
        return "".join(strings), None
    if kind == "multimodal_text":
        parts = content.get("parts") or []
        strings = [p for p in parts if isinstance(p, str) and p]
        dropped = sum(1 for p in parts if not isinstance(p, str))
        if dropped:
            conv.skipped["non-text part"] += dropped
        if not strings:
            return None, "non-text content"
        return "\n\n".join(strings), None
    return None, f"{kind or 'unknown'} content"


# -- Open WebUI --------------------------------------------------------------------------------
def parse_openwebui(obj: dict[str, Any], index: int) -> ChatConversation:
    """One chat of an Open WebUI export: ``{"id", "title", "chat": {"history": {"messages":
    {id: {"id", "parentId", "childrenIds", "role", "content", "timestamp", "model"}},
    "currentId"}}}`` (a bare ``chat`` object is read too)."""
    chat: dict[str, Any] = obj["chat"] if isinstance(obj.get("chat"), dict) else obj
    history = chat.get("history")
    if not isinstance(history, dict) or not isinstance(history.get("messages"), dict):
        raise ConversationError("'chat.history.messages' must be an object of id -> message")
    conv_id = obj.get("id") or chat.get("id") or f"openwebui-{index}"
    conv = ChatConversation(
        "openwebui",
        str(conv_id),
        obj.get("title") or chat.get("title"),
        [],
        current=history.get("currentId"),
    )
    for order, (key, message) in enumerate(history["messages"].items()):
        if not isinstance(message, dict):
            raise ConversationError(f"message {key!r} must be an object")
        node_id = _str(message.get("id", key), "a message id")
        role = message.get("role")
        content = message.get("content")
        skip = None
        if isinstance(content, list):  # OpenAI-style parts
            strings = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
            dropped = len(content) - len(strings)
            if dropped:
                conv.skipped["non-text part"] += dropped
            content = "\n\n".join(s for s in strings if isinstance(s, str))
        elif content is not None and not isinstance(content, str):
            raise ConversationError(f"message {node_id!r}: 'content' must be a string")
        if message.get("files"):
            conv.skipped["attached file"] += len(message["files"])
        if role not in ("user", "assistant", "system"):
            skip = f"{role or 'unknown'} message"
        interrupted = role == "assistant" and (message.get("done") is False or bool(message.get("error")))
        conv.nodes.append(
            ChatNode(
                node_id,
                message.get("parentId"),
                role or "unknown",
                content,
                skip=skip,
                model=message.get("modelName") or message.get("model"),
                created=_seconds(message.get("timestamp")),
                interrupted=interrupted,
                order=order,
            )
        )
    return conv


# -- LibreChat ---------------------------------------------------------------------------------
def parse_librechat(obj: dict[str, Any], index: int) -> ChatConversation:
    """A LibreChat export: ``{"conversationId", "title", "messages": [...]}``, messages linked by
    ``parentMessageId`` (the nil UUID for the first), either flat or nested in ``children``
    (``"recursive": true``). Current exports name the nested list ``messagesTree``; ``isEdited``
    needs nothing: the edited text is the text the interface shows."""
    key = "messagesTree" if "messagesTree" in obj else "messages"
    messages = obj.get(key)
    if not isinstance(messages, list):
        raise ConversationError(f"'{key}' must be a list")
    conv_id = obj.get("conversationId") or f"librechat-{index}"
    conv = ChatConversation("librechat", str(conv_id), obj.get("title"), [])
    # Nested exports hold replies in "children"; an explicit stack flattens them in order.
    stack: list[tuple[Any, str | None]] = [(m, None) for m in reversed(messages)]
    order = 0
    while stack:
        message, enclosing = stack.pop()
        if not isinstance(message, dict):
            raise ConversationError(f"message #{order + 1} must be an object")
        node_id = _str(message.get("messageId"), "'messageId'")
        parent = message.get("parentMessageId") or enclosing
        if parent == LIBRECHAT_NO_PARENT:
            parent = None
        by_user = message.get("isCreatedByUser")
        role = "user" if by_user else "assistant"
        text = message.get("text")
        if isinstance(message.get("content"), list):  # agents write typed parts
            parts = message["content"]
            strings = [p.get("text") for p in parts if isinstance(p, dict) and p.get("type") == "text"]
            strings = [s.get("value") if isinstance(s, dict) else s for s in strings]
            dropped = len(parts) - len(strings)
            if dropped:
                conv.skipped["non-text part"] += dropped
            text = "\n\n".join(s for s in strings if isinstance(s, str)) or text
        if text is not None and not isinstance(text, str):
            raise ConversationError(f"message {node_id!r}: 'text' must be a string")
        if message.get("files"):
            conv.skipped["attached file"] += len(message["files"])
        skip = None
        if message.get("error") and not (text or "").strip():
            skip = "error message"
        conv.nodes.append(
            ChatNode(
                node_id,
                parent,
                role,
                text,
                skip=skip,
                model=None if by_user else (message.get("model") or message.get("sender")),
                created=_seconds(message.get("createdAt")),
                interrupted=not by_user and bool(message.get("unfinished") or message.get("error")),
                order=order,
            )
        )
        order += 1
        children = message.get("children")
        if isinstance(children, list):
            stack.extend((c, node_id) for c in reversed(children))
    return conv


# -- linear datasets ---------------------------------------------------------------------------
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "model": "assistant",
    "system": "system",
}


def _linear(source: str, conv_id: str, turns: list[tuple[str, Any]], title: str | None = None,
            model: str | None = None) -> ChatConversation:
    conv = ChatConversation(source, conv_id, title, [])
    parent = None
    for i, (role, content) in enumerate(turns):
        node_id = f"{conv_id}/{i}"
        skip = None
        text = content
        if isinstance(content, list):  # content as typed parts
            strings = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
            if len(strings) < len(content):
                conv.skipped["non-text part"] += len(content) - len(strings)
            text = "\n\n".join(s for s in strings if isinstance(s, str))
        if text is not None and not isinstance(text, str):
            raise ConversationError(f"turn {i}: content must be a string, got {text!r:.60}")
        if role not in ("user", "assistant", "system"):
            skip = f"{role or 'unknown'} message"
        reply_model = model if role == "assistant" else None
        conv.nodes.append(ChatNode(node_id, parent, role, text, skip=skip, model=reply_model, order=i))
        parent = node_id
    conv.current = parent
    return conv


def parse_trl_messages(obj: dict[str, Any], index: int) -> ChatConversation:
    """TRL's conversational records: ``{"messages": [{"role", "content"}, ...]}``."""
    messages = obj.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ConversationError("'messages' must be a list of {role, content} objects")
    # ultrachat_200k names its records by prompt_id
    conv_id = str(obj.get("id") or obj.get("tree_id") or obj.get("prompt_id") or f"messages-{index}")
    return _linear("trl-messages", conv_id, [(m.get("role"), m.get("content")) for m in messages])


def parse_sharegpt(obj: dict[str, Any], index: int) -> ChatConversation:
    """ShareGPT records: ``{"conversations": [{"from": "human"|"gpt"|"system", "value"}, ...]}``."""
    turns = obj.get("conversations")
    if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
        raise ConversationError("'conversations' must be a list of {from, value} objects")
    conv_id = str(obj.get("id") or f"sharegpt-{index}")
    return _linear(
        "sharegpt",
        conv_id,
        [(SHAREGPT_ROLES.get(str(t.get("from")).lower(), t.get("from")), t.get("value")) for t in turns],
    )


def parse_chatbot_ui(obj: dict[str, Any], index: int) -> ChatConversation:
    """One conversation of a Chatbot UI export's ``history``: ``{"id", "name", "messages":
    [{"role", "content"}], "model": {"id", "name"}, "prompt", "temperature", "folderId"}``.
    ``prompt`` is the system prompt the interface sent before the messages, so it opens the tree."""
    messages = obj.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ConversationError("'messages' must be a list of {role, content} objects")
    model = obj.get("model") or {}
    turns = [(m.get("role"), m.get("content")) for m in messages]
    system = obj.get("prompt")
    if isinstance(system, str) and system.strip():
        turns.insert(0, ("system", system))
    conv_id = str(obj.get("id") or f"chatbot-ui-{index}")
    name = model.get("name") or model.get("id") if isinstance(model, dict) else None
    return _linear("chatbot-ui", conv_id, turns, title=obj.get("name"), model=name)


def chatbot_ui_history(doc: Any) -> list[Any] | None:
    """The conversations of a Chatbot UI export (``{"version", "history": [...], "folders",
    "prompts"}``, the form LibreChat imports too); None for any other document."""
    if isinstance(doc, dict) and isinstance(doc.get("history"), list) and ("version" in doc or "folders" in doc):
        return doc["history"]
    return None


PARSERS: dict[str, Callable[[dict[str, Any], int], ChatConversation]] = {
    "chatgpt": parse_chatgpt,
    "openwebui": parse_openwebui,
    "librechat": parse_librechat,
    "trl-messages": parse_trl_messages,
    "sharegpt": parse_sharegpt,
    "chatbot-ui": parse_chatbot_ui,
}


def chat_format_of(obj: dict[str, Any]) -> str | None:
    """Which chat format one record is, by its keys; None for none of them."""
    if isinstance(obj.get("mapping"), dict):
        return "chatgpt"
    chat: dict[str, Any] = obj["chat"] if isinstance(obj.get("chat"), dict) else obj
    if isinstance(chat.get("history"), dict):
        return "openwebui"
    if "conversationId" in obj and isinstance(obj.get("messagesTree", obj.get("messages")), list):
        return "librechat"
    messages = obj.get("messages")
    if isinstance(messages, list) and "name" in obj and isinstance(obj.get("model"), dict):
        return "chatbot-ui"  # a conversation of Chatbot UI's history: named, with a model object
    first = messages[0] if isinstance(messages, list) and messages else None
    if isinstance(first, dict) and "role" in first:
        return "trl-messages"
    turns = obj.get("conversations")
    if isinstance(turns, list) and turns and isinstance(turns[0], dict) and "from" in turns[0]:
        return "sharegpt"
    return None


def is_record_of(fmt: str, obj: dict[str, Any]) -> bool:
    """Whether a record is a conversation of `fmt`. Inside a Chatbot UI export's history any
    record with a list of messages is one (its name and model may be missing)."""
    if fmt == "chatbot-ui" and isinstance(obj.get("messages"), list):
        return True
    return chat_format_of(obj) == fmt


# -- the common part: intermediate form -> Open-Assistant tree objects ------------------------
@dataclass
class _Out:
    id: str
    role: str
    text: str
    model: str | None
    created: float | None
    interrupted: bool
    shown: bool
    children: list[_Out] = field(default_factory=list)
    parent: _Out | None = None


def _shown_ids(conv: ChatConversation, by_id: dict[str, ChatNode], kids) -> set[str]:
    current = conv.current if conv.current in by_id else None
    if current is None:
        # No pointer (LibreChat) or a stale one: the interface shows the newest message's branch.
        leaves = [n for n in by_id.values() if not kids.get(n.id)]
        if not leaves:
            return set()
        newest = max(leaves, key=lambda n: (n.created or 0.0, n.order))
        current = newest.id
        if conv.current is not None:
            conv.skipped["current message not in the conversation (newest branch shown)"] += 1
    shown = set()
    node: str | None = current
    while node is not None and node not in shown:
        shown.add(node)
        node = by_id[node].parent
    return shown


def conversation_trees(conv: ChatConversation) -> tuple[list[dict[str, Any]], Counter]:
    """The nested Open-Assistant tree objects of one conversation, and what was skipped.

    Raises ConversationError for a conversation that is not a tree (duplicate ids, a parent that
    is not there, a cycle) or that holds no user message to start from.
    """
    skipped: Counter = Counter(conv.skipped)
    by_id: dict[str, ChatNode] = {}
    for node in conv.nodes:
        if node.id in by_id:
            raise ConversationError(f"duplicate message id {node.id!r}")
        by_id[node.id] = node
    kids: dict[str | None, list[ChatNode]] = defaultdict(list)
    for node in conv.nodes:
        if node.parent is not None and node.parent not in by_id:
            raise ConversationError(f"message {node.id!r} has parent {node.parent!r}, which is not in the conversation")
        kids[node.parent].append(node)
    for siblings in kids.values():
        siblings.sort(key=lambda n: (n.created is None, n.created or 0.0, n.order))
    shown = _shown_ids(conv, by_id, kids)

    # Top-down walk, each node handed the nearest kept ancestor its replies hang under.
    roots: list[_Out] = []
    system: list[tuple[str, str]] = []
    reached = 0
    stack: list[tuple[ChatNode, _Out | None]] = [(n, None) for n in reversed(kids[None])]
    while stack:
        node, above = stack.pop()
        reached += 1
        out = above
        text = node.text if isinstance(node.text, str) else ""
        if node.role == "none":
            pass  # a placeholder node (ChatGPT's root): nothing to count
        elif node.skip is not None:
            skipped[node.skip] += 1
        elif not text.strip():
            skipped[f"empty {node.role} message"] += 1
        elif node.role == "system":
            if above is None and not roots:
                system.append((node.id, text))
            else:
                skipped["system message inside the conversation"] += 1
        elif node.role == "assistant" and above is None:
            skipped["assistant message before the first user message"] += 1
        else:
            out = _Out(
                node.id,
                node.role,
                text,
                node.model if node.role == "assistant" else None,
                node.created,
                node.interrupted,
                node.id in shown,
                parent=above,
            )
            (above.children if above is not None else roots).append(out)
        stack.extend((c, out) for c in reversed(kids.get(node.id, ())))
    if reached != len(by_id):
        raise ConversationError("the parent links form a cycle (some messages never reach a root)")
    if not roots:
        raise ConversationError("no user message to start a tree from")
    roots = _alternate_roles(roots, skipped)
    return [_tree_object(conv, root, system) for root in roots], skipped


def _alternate_roles(roots: list[_Out], skipped: Counter) -> list[_Out]:
    """Join same-role runs so that roles alternate. A message whose parent has no other reply is
    appended to the parent; one among several replies gets a joined copy of its parent, placed
    beside the parent (or as a new root), so that no branch loses its context."""
    queue = list(roots)
    while queue:
        node = queue.pop()
        for child in list(node.children):
            if child.role != node.role:
                continue
            skipped[f"consecutive {node.role} messages joined"] += 1
            if len(node.children) == 1:
                node.text = f"{node.text}\n\n{child.text}"
                node.shown = node.shown or child.shown
                node.model = child.model or node.model
                node.interrupted = child.interrupted
                node.children = child.children
                for grandchild in node.children:
                    grandchild.parent = node
                queue.append(node)  # its new replies may repeat the role again
                break
            joined = _Out(
                child.id,
                child.role,
                f"{node.text}\n\n{child.text}",
                child.model or node.model,
                child.created,
                child.interrupted,
                child.shown,
                child.children,
                node.parent,
            )
            for grandchild in joined.children:
                grandchild.parent = joined
            node.children.remove(child)
            siblings = node.parent.children if node.parent is not None else roots
            siblings.insert(siblings.index(node) + 1, joined)
            queue.append(joined)
        else:
            queue.extend(node.children)
    return roots


def _tree_object(conv: ChatConversation, root: _Out, system: list[tuple[str, str]]) -> dict:
    tree: dict[str, Any] = {
        "message_tree_id": root.id,
        "tree_state": "ready_for_export",  # a finished conversation: usable by default filters
        "source": conv.source,
        "conversation_id": conv.id,
    }
    if conv.title:
        tree["title"] = conv.title
    if system:
        tree["system"] = "\n\n".join(text for _, text in system)
    views: dict[int, dict[str, Any]] = {}
    stack: list[tuple[_Out, str | None]] = [(root, None)]
    while stack:
        node, parent_id = stack.pop()
        message: dict[str, Any] = {"message_id": node.id}
        if parent_id is not None:
            message["parent_id"] = parent_id
        created = _iso(node.created)
        if created is not None:
            message["created_date"] = created
        message["text"] = node.text
        message["role"] = "prompter" if node.role == "user" else "assistant"
        if node.model:
            message["model_name"] = node.model
        if node.shown:
            message["shown"] = True
        if node.interrupted:
            message["interrupted"] = True
        message["replies"] = []
        views[id(node)] = message
        if node.parent is not None and parent_id is not None:
            views[id(node.parent)]["replies"].append(message)
        stack.extend((c, node.id) for c in reversed(node.children))
    tree["prompt"] = views[id(root)]
    return tree
