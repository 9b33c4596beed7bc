"""The teacher as a ranker of sibling replies that humans did not rank."""

from __future__ import annotations

import re

from convdistill.teacher.client import ChatRequest
from convdistill.teacher.prompt_templates import PromptSet, transcript


def rank_request(history: list[tuple[str, str]], candidates: list[str], prompts: PromptSet, seed: int) -> ChatRequest:
    shown = "\n\n".join(f"Candidate {i}:\n{text}" for i, text in enumerate(candidates, 1))
    text = prompts.rank.safe_substitute(conversation=transcript(history), candidates=shown, count=str(len(candidates)))
    return ChatRequest((("user", text),), max_tokens=48, temperature=0.0, seed=seed, purpose="rank")


def parse_ranking(text: str, count: int) -> list[int] | None:
    """Candidate indexes (0-based) best first, or None unless every candidate appears once.

    Robust to prose around the answer: the first mention of each number in 1..count counts.
    """
    order: list[int] = []
    for match in re.findall(r"\d+", text):
        number = int(match)
        if 1 <= number <= count and number - 1 not in order:
            order.append(number - 1)
    return order if len(order) == count else None


def ranking_validator(count: int):
    def validate(text: str) -> str | None:
        order = parse_ranking(text, count)
        return " > ".join(str(i + 1) for i in order) if order else None

    return validate
