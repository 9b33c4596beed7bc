"""Training data of the multi-turn vs single-turn experiment: one record per assistant turn.

Every regime trains on the same unit, "one assistant reply to learn", so that the regimes differ
only in what the student sees before that reply:

    turn_records   every assistant turn of the paths, once, with its whole history (loss on that
                   reply only): regimes (b), (c) and (d)
    single_turn    the same record with only the user turn just before the reply (and the system
                   message, if any): regime (a), LaMini-style independent prompt -> reply

With the same number of records, batch size, steps and seed, (a) and (b) train the same replies
in the same order (the trainer's shuffle depends only on the dataset length and the seed), so
the trained tokens match and the visible context is the one difference. Records of one
conversation stay together and in prefix order, so a causal teacher scores each conversation
once for regime (d) (the logit cache reads every shorter record off the longest).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any

from convdistill.eval.generator import case_messages, recall_case

Record = dict[str, Any]


def cut_words(text: str, max_words: int | None) -> str:
    """The first `max_words` words of `text` (whitespace kept inside), or `text` if shorter."""
    if max_words is None:
        return text
    words = text.split()
    return text if len(words) <= max_words else " ".join(words[:max_words])


def _cut_path(path: Record, max_reply_words: int | None) -> tuple[list[dict[str, str]], list[str]]:
    """A path's messages with its replies cut to `max_reply_words`, and their ids (positions
    where the record has none)."""
    messages = [{"role": m["role"], "content": cut_words(m["content"], max_reply_words)
                 if m["role"] == "assistant" else m["content"]} for m in path["messages"]]
    return messages, [str(x) for x in path.get("message_ids") or range(len(messages))]


def turn_records(paths: Iterable[Record], source: str, max_reply_words: int | None = None) -> list[Record]:
    """One record per distinct assistant turn of `paths` (path records), with its history.

    Paths of a tree share their first turns; a turn is kept once (keyed by its message id, or by
    its position when a record has none). Long replies are cut to `max_reply_words`, in the
    history as well as in the trained reply, so a reply costs the same everywhere it occurs.
    """
    out: list[Record] = []
    seen: set[tuple[str, str]] = set()
    for path in paths:
        messages, ids = _cut_path(path, max_reply_words)
        synthetic = path.get("synthetic") or [False] * len(messages)
        for i, message in enumerate(messages):
            key = (str(path.get("tree_id")), str(ids[i]))
            if message["role"] != "assistant" or i == 0 or key in seen:
                continue
            seen.add(key)
            out.append({
                "messages": messages[: i + 1],
                "train": [j == i for j in range(i + 1)],
                "synthetic": list(synthetic[: i + 1]),
                "tree_id": path.get("tree_id"),
                "source": source,
                "assistant_turn": sum(m["role"] == "assistant" for m in messages[: i + 1]),
            })
    return out


def conversations(paths: Iterable[Record], source: str, max_reply_words: int | None = None) -> list[Record]:
    """`paths` whole, for regimes e and f: one record per conversation, every assistant turn
    trained, replies cut as `turn_records` cuts them, so the same replies are learnt as by
    regimes c and d, each one conversation long instead of one record each. Paths of one tree
    that repeat a conversation's prefix add only their new turns' worth: a path whose every
    assistant turn an earlier path already holds is left out."""
    out: list[Record] = []
    seen: set[tuple[str, str]] = set()
    for path in paths:
        messages, ids = _cut_path(path, max_reply_words)
        keys = {(str(path.get("tree_id")), str(ids[i])) for i, m in enumerate(messages)
                if m["role"] == "assistant" and i > 0}
        if not keys - seen:
            continue
        seen |= keys
        out.append({"messages": messages, "synthetic": list(path.get("synthetic") or [False] * len(messages)),
                    "tree_id": path.get("tree_id"), "source": source})
    return out


def single_turn(record: Record) -> Record:
    """`record` without its history: the system message (if any), the user turn just before the
    reply, and the reply."""
    messages, synthetic = record["messages"], record.get("synthetic") or [False] * len(record["messages"])
    system = [i for i, m in enumerate(messages) if m["role"] == "system"][:1]
    keep = sorted({i for i in (*system, len(messages) - 2, len(messages) - 1) if i >= 0})
    return {**record, "messages": [messages[i] for i in keep], "train": [i == keep[-1] for i in keep],
            "synthetic": [synthetic[i] for i in keep]}


def synthetic_paths(count: int, seed: int, distances: tuple[int, int], max_lead: int, value_set: str
                    ) -> list[Record]:
    """`count` context-memory conversations as path records (every turn answered), from the eval
    generator's recall cases: a fact, fillers, questions about every stated fact."""
    rng = random.Random(seed)
    out = []
    for index in range(count):
        case = recall_case(index, rng.randint(*distances), rng, lead=rng.randint(0, max_lead),
                           value_set=value_set, ask_all=True)
        messages = case_messages(case)
        out.append({"messages": messages, "tree_id": f"train-{seed}-{case['id']}",
                    "synthetic": [False] * len(messages)})
    return out


def user_turns(messages: Sequence[dict[str, str]]) -> tuple[str, ...]:
    return tuple(m["content"] for m in messages if m["role"] == "user")


def check_disjoint(train: Sequence[Record], suites: dict[str, list[dict[str, Any]]],
                   unseen: Sequence[str] = ()) -> dict[str, int]:
    """Fail unless no eval case occurs in the training data: no training conversation starts
    with an eval case's user turns; and no training text mentions a value of the suites named
    in `unseen` (their facts must be new to the student). Returns the counts checked."""
    starts = {user_turns(r["messages"]) for r in train}
    prefixes = {s[:k] for s in starts for k in range(1, len(s) + 1)}
    checked = 0
    for name, cases in suites.items():
        for case in cases:
            checked += 1
            asked = tuple(t["user"] for t in case["turns"])
            if asked in prefixes:
                raise ValueError(f"eval case {case['id']} of {name} occurs in the training data")
    values = {v for name in unseen for case in suites[name] for t in case["turns"]
              for v in t.get("checks", {}).get("recall_of", [])}
    if values:
        text = "\n".join(m["content"] for r in train for m in r["messages"]).casefold()
        leaked = sorted(v for v in values if v.casefold() in text)
        if leaked:
            raise ValueError(f"values of the unseen-fact suites occur in the training data: {leaked[:5]}")
    return {"cases": checked, "unseen_values": len(values)}
