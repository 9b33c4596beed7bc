"""What a unit's eval results say about memory: recall by distance, copying within a turn, the
first turn, and forced-choice recall (the right value's likelihood among the slot's values)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from convdistill.eval.suite import Case


def copy_accuracy(results: dict[str, Any]) -> float | None:
    """Share of fact turns whose acknowledgement names the value just given in the same user turn:
    copying within a turn, which every regime trains alike (recall needs it across turns)."""
    from convdistill.eval.generator import ACK

    hits = [t["reference"].removeprefix(ACK).rstrip(".").casefold() in t["reply"].casefold()
            for c in results["cases"] for t in c["turns"] if (t["reference"] or "").startswith(ACK)]
    return sum(hits) / len(hits) if hits else None


def recall_accuracy(results: dict[str, Any]) -> dict[str, float]:
    """Share of recall questions answered right, by the distance (in turns) from the fact."""
    by: dict[str, list[bool]] = {}
    for case in results["cases"]:
        distance = recall_distance(case["tags"])
        for turn in case["turns"]:
            for check in turn["checks"]:
                if check["name"] == "recall_of":
                    by.setdefault(distance, []).append(bool(check["passed"]))
    return {d: sum(v) / len(v) for d, v in sorted(by.items(), key=lambda kv: int(kv[0]))}


def mean_share(by: dict[str, float]) -> float | None:
    """The mean of per-distance shares (each distance weighs the same), None where none was asked."""
    return sum(by.values()) / len(by) if by else None


def first_turn(results: dict[str, Any]) -> dict[str, float | None]:
    scores = [c["turns"][0]["score"] for c in results["cases"] if c["turns"][0]["score"] is not None]
    nlls = [c["turns"][0]["nll"] for c in results["cases"] if c["turns"][0].get("nll") is not None]
    return {"score": sum(scores) / len(scores) if scores else None,
            "nll": sum(nlls) / len(nlls) if nlls else None}


def recall_distance(tags: Sequence[str]) -> str:
    """The `distance-<d>` tag of a recall case, as "<d>"."""
    return next(t.removeprefix("distance-") for t in tags if t.startswith("distance-"))


def forced_choice(backend: Any, cases: Sequence[Case], value_set: str) -> dict[str, float]:
    """Share of recall questions where the student gives the right value the highest likelihood
    among all values of the asked slot (the gold conversation before the question, the answer
    "<value>." teacher-forced, summed over its tokens). Greedy answers need the whole value right;
    this shows a student starting to use its context earlier, and a student that ignores the
    conversation stays at 1 / (values of the slot) here, whatever it learned."""
    from convdistill.eval.generator import FACTS, HELDOUT_WORDING, slot_values
    from convdistill.eval.runner import turn_history
    from convdistill.models import seq2seq_format

    slots = {ask: slot for slot, _say, ask, _values in FACTS}
    slots.update({ask: slot for slot, (_say, ask) in HELDOUT_WORDING.items()})
    tokenizer = backend.chat.tokenizer
    items: list[tuple[str, int, list[str]]] = []  # (distance, index of the right value, candidates)
    pairs: list[tuple[list[dict[str, str]], str]] = []
    for case in cases:
        distance = recall_distance(case.tags)
        for k, turn in enumerate(case.turns):
            if not turn.checks.recall_of:
                continue
            history = turn_history(case, k, [None] * len(case.turns), "gold")  # what generation sees
            candidates = slot_values(slots[turn.user], value_set)
            items.append((distance, candidates.index(turn.checks.recall_of[0]), candidates))
            pairs += [(history, f"{c}.") for c in candidates]
    means = backend.reference_nll(pairs)
    lengths = [len(tokenizer(seq2seq_format.target_text(ref, tokenizer), add_special_tokens=False)["input_ids"])
               for _, ref in pairs]
    totals = iter(m * n for m, n in zip(means, lengths, strict=True))
    by: dict[str, list[bool]] = {}
    for distance, right, candidates in items:
        scores = [next(totals) for _ in candidates]
        by.setdefault(distance, []).append(min(range(len(scores)), key=scores.__getitem__) == right)
    return {d: sum(v) / len(v) for d, v in sorted(by.items(), key=lambda kv: int(kv[0]))}
