"""The Open-Assistant export schema, in one place.

Two file formats carry the same data:

* nested trees: one JSON object per line, ``{"message_tree_id", "tree_state", "prompt", "origin"}``
  where ``prompt`` is the root message and every message holds its children in ``replies``;
* flat messages: one message per line (no ``replies``), linked by ``parent_id``, usually with
  ``message_tree_id`` and ``tree_state`` repeated on each row.

Exports omit null fields, so every key but ``message_id``, ``text`` and ``role`` may be missing.
Unknown keys are kept as they are (a newer export must not lose data on a round trip).
This module only checks types; structure (ids, parents, roles) is checked in ``tree_graph``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

PROMPTER = "prompter"
ASSISTANT = "assistant"
ROLES = (PROMPTER, ASSISTANT)

# Fields of a message, in the order the export writes them.
MESSAGE_FIELDS = (
    "message_id",
    "parent_id",
    "user_id",
    "created_date",
    "text",
    "role",
    "lang",
    "review_count",
    "review_result",
    "deleted",
    "rank",
    "synthetic",
    "model_name",
    "emojis",
    "replies",
    "labels",
    "events",
    "detoxify",
    "message_tree_id",
    "tree_state",
)
TREE_FIELDS = ("message_tree_id", "tree_state", "prompt", "origin")
REQUIRED_MESSAGE_FIELDS = ("message_id", "text", "role")


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_int(v: Any) -> bool:
    # bool is an int subclass in Python; a rank of `true` is still a wrong type.
    return isinstance(v, int) and not isinstance(v, bool)


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, int | float)) and not isinstance(v, bool)


def _is_emojis(v: Any) -> bool:
    # JSON object keys are always strings; only the counts need a look.
    return isinstance(v, dict) and all(type(c) is int for c in v.values())


def _is_labels(v: Any) -> bool:
    if not isinstance(v, dict):
        return False
    for item in v.values():
        if not isinstance(item, dict):
            return False
        value, count = item.get("value"), item.get("count")
        if value is not None and not _is_number(value):
            return False
        if count is not None and not _is_int(count):
            return False
    return True


def _is_detoxify(v: Any) -> bool:
    return isinstance(v, dict) and all(x is None or _is_number(x) for x in v.values())


def _is_events(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(x, list) for x in v.values())


# field -> (check, expected type as said in an error message). None is allowed for every field
# here: exports write null or omit the key, both mean "unknown".
MESSAGE_FIELD_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "message_id": (_is_str, "a string"),
    "parent_id": (_is_str, "a string"),
    "user_id": (_is_str, "a string"),
    "created_date": (_is_str, "an ISO date string"),
    "text": (_is_str, "a string"),
    "role": (_is_str, "a string"),
    "lang": (_is_str, "a string"),
    "review_count": (_is_int, "an integer"),
    "review_result": (_is_bool, "a boolean"),
    "deleted": (_is_bool, "a boolean"),
    "rank": (_is_int, "an integer"),
    "synthetic": (_is_bool, "a boolean"),
    "model_name": (_is_str, "a string"),
    "emojis": (_is_emojis, "an object of emoji -> integer count"),
    "labels": (_is_labels, "an object of label -> {value: number, count: integer}"),
    "events": (_is_events, "an object of event type -> list"),
    "detoxify": (_is_detoxify, "an object of category -> number"),
    "message_tree_id": (_is_str, "a string"),
    "tree_state": (_is_str, "a string"),
}

TREE_FIELD_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "message_tree_id": (_is_str, "a string"),
    "tree_state": (_is_str, "a string"),
    "origin": (_is_str, "a string"),
}


# Fields whose check looks inside the value (a type alone does not settle it).
_STRUCTURED_CHECKS: dict[str, Callable[[Any], bool]] = {
    name: check
    for name, (check, _) in MESSAGE_FIELD_TYPES.items()
    if check not in (_is_str, _is_int, _is_bool)
}


# Signatures (field names and value types, in order) of messages that passed the full check,
# mapped to the structured fields that still need a look at their contents. An export repeats a
# handful of signatures, so most messages cost two C-level tuple builds and one dict lookup.
_VALID_SIGNATURES: dict[tuple[tuple[str, ...], tuple[type, ...]], tuple[str, ...]] = {}
_MAX_SIGNATURES = 4096


def message_type_error(message: dict[str, Any]) -> str | None:
    """The first problem with one message's own fields, or None. Children are not looked at."""
    signature = (tuple(message), tuple(map(type, message.values())))
    structured = _VALID_SIGNATURES.get(signature)
    if structured is None:
        problem = _describe_type_error(message)
        if problem is None and len(_VALID_SIGNATURES) < _MAX_SIGNATURES:
            _VALID_SIGNATURES[signature] = tuple(
                name
                for name, value in message.items()
                if name in _STRUCTURED_CHECKS and value is not None
            )
        return problem
    if message["role"] not in ROLES:  # the one rule on a value rather than a type
        return _describe_type_error(message)
    for name in structured:
        if not _STRUCTURED_CHECKS[name](message[name]):
            return _describe_type_error(message)
    return None


def _describe_type_error(message: dict[str, Any]) -> str | None:
    for name in REQUIRED_MESSAGE_FIELDS:
        if message.get(name) is None:
            return f"missing required field '{name}'"
    for name, value in message.items():
        if value is None:
            continue
        spec = MESSAGE_FIELD_TYPES.get(name)
        if spec is not None and not spec[0](value):
            return f"field '{name}' must be {spec[1]}, got {value!r:.60}"
    if message["role"] not in ROLES:
        return f"field 'role' must be one of {', '.join(ROLES)}, got {message['role']!r:.60}"
    return None


def tree_type_error(tree: dict[str, Any]) -> str | None:
    for name, (check, expected) in TREE_FIELD_TYPES.items():
        value = tree.get(name)
        if value is not None and not check(value):
            return f"tree field '{name}' must be {expected}, got {value!r:.60}"
    if not isinstance(tree.get("prompt"), dict):
        return "tree field 'prompt' must be a message object"
    return None


def is_tree_object(obj: dict[str, Any]) -> bool:
    return "prompt" in obj or ("message_tree_id" in obj and "message_id" not in obj)


def is_message_object(obj: dict[str, Any]) -> bool:
    return "message_id" in obj
