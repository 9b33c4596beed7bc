"""Control models: replies that do not converse, to show where a suite's floor is.

A yardstick is only as good as what it refuses. Each control answers without taking in the
conversation, the way a broken student does:

    constant    one fixed sentence for every turn (a student that collapsed onto one reply)
    unrelated   a fluent, friendly sentence from a fixed pool, unrelated to the question
    echo        the user's last message given back
    empty       nothing
    shuffled    the reference reply of another case's turn (a right answer to another question)

Under a sound scoring every control scores near 0 and passes no case; `convdistill eval
controls` runs them all and writes their results beside a model's. They are reachable three
ways, all answering the same: as a backend here (`--model control:constant`), in-process for the
demo and the experiment, and served on an OpenAI-compatible endpoint (`eval controls --serve`,
eval/controls_server.py) so that any client, ours or another tool's, scores them through HTTP.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from convdistill.errors import BadRecipe
from convdistill.eval.suite import Suite

CONTROL_PREFIX = "control:"
CONTROLS = {
    "constant": "one fixed sentence for every turn",
    "unrelated": "a fluent sentence from a fixed pool, unrelated to the question",
    "echo": "the user's last message given back",
    "empty": "an empty reply",
    "shuffled": "another case's reference reply",
}
CONSTANT_REPLY = "When buying a TV, consider the screen size, the refresh rate and your budget."
UNRELATED_REPLIES = (
    "That's a great question! There are many factors to consider, and the best choice depends on your situation.",
    "I'm glad you asked. Many people find it helpful to take things one step at a time and stay patient.",
    "Thanks for sharing that with me. It sounds like something worth thinking about carefully.",
    "Sure! Let me know if there is anything else I can help you with today.",
    "It really depends on the context, but in general a balanced approach tends to work well.",
    "Good point. People have different opinions about this, and both sides have their merits.",
    "I understand. Sometimes the simplest solution is the best one, so it is worth starting there.",
    "Of course, that makes sense. Keeping things organised usually saves time in the long run.",
)

Message = dict[str, str]  # as the backends' (backends imports this module: no import back)
# (user message, reference reply) of each turn of a suite that has a reference: the shuffled
# control's pool.
References = Sequence[tuple[str, str]]


def control_names() -> list[str]:
    """The backend / endpoint model names of the controls: control:constant, ..."""
    return [CONTROL_PREFIX + name for name in CONTROLS]


def is_control(model: str) -> bool:
    return model.startswith(CONTROL_PREFIX)


def reference_pool(suite: Suite) -> list[tuple[str, str]]:
    return [(turn.user, turn.reference) for case in suite.cases for turn in case.turns if turn.reference]


def _pick(count: int, key: str) -> int:
    """A stable index in 0..count-1 for `key` (Python's hash() changes from run to run)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % count


def control_reply(name: str, conversation: Sequence[Message], references: References = ()) -> str:
    """What control `name` (without its prefix) answers to `conversation`."""
    users = [m["content"] for m in conversation if m["role"] == "user"]
    last = users[-1] if users else ""
    key = "\n".join(users)
    if name == "constant":
        return CONSTANT_REPLY
    if name == "unrelated":
        return UNRELATED_REPLIES[_pick(len(UNRELATED_REPLIES), key)]
    if name == "echo":
        return last
    if name == "empty":
        return ""
    if name == "shuffled":
        # a reference written for a user message that is not in this conversation: another case's
        others = [reply for user, reply in references if user not in users]
        if not others:
            raise BadRecipe("the shuffled control needs reference replies from other cases; this suite has none")
        return others[_pick(len(others), key)]
    raise BadRecipe(f"unknown control {name!r} (known: {', '.join(CONTROLS)})")


class ControlBackend:
    """A control as an eval backend (`open_backend("control:echo")`)."""

    def __init__(self, model: str, references: References = ()):
        name = model.removeprefix(CONTROL_PREFIX)
        if name not in CONTROLS:
            raise BadRecipe(f"unknown control model {model!r} (known: {', '.join(control_names())})")
        self.name = model
        self.control = name
        self.references = list(references)

    def generate(self, conversations: Sequence[Sequence[Message]]) -> list[str]:
        return [control_reply(self.control, c, self.references) for c in conversations]

    def reference_nll(self, pairs: Sequence[tuple[Sequence[Message], str]]) -> None:
        return None  # a control has no likelihoods
