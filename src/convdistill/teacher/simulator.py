"""The user simulator: writes the next user turn of a conversation, or says it is complete.

Its instruction comes *after* the conversation, inside one user message: put before it, small
models tend to continue as the assistant (they swap roles). Persona and style vary by seed.
"""

from __future__ import annotations

import random
import re

from convdistill.teacher.client import ChatRequest
from convdistill.teacher.prompt_templates import PromptSet, transcript

END_MARKER = "[END]"
_SPEAKER = re.compile(r"^\s*(user|you|me|human)\s*:\s*", re.IGNORECASE)
_OTHER_SPEAKER = re.compile(r"\n\s*(assistant|ai|system)\s*:", re.IGNORECASE)


def pick_persona(prompts: PromptSet, seed: int, key: str) -> tuple[str, str]:
    rng = random.Random(f"{seed}:{key}")
    return rng.choice(prompts.personas), rng.choice(prompts.styles)


def simulator_request(
    history: list[tuple[str, str]],
    prompts: PromptSet,
    persona: str,
    style: str,
    seed: int,
    max_tokens: int,
) -> ChatRequest:
    text = prompts.simulator.safe_substitute(
        conversation=transcript(history), persona=persona, style=style, end_marker=END_MARKER
    )
    return ChatRequest((("user", text),), max_tokens=max_tokens, temperature=0.9, seed=seed, purpose="simulator")


def clean_user_turn(text: str) -> str | None:
    """The simulated user message, END_MARKER when the conversation is over, None if unusable."""
    text = text.strip()
    if not text:
        return None
    if END_MARKER.lower() in text.lower() and len(text) <= len(END_MARKER) + 20:
        return END_MARKER
    lines = text.splitlines()
    if lines and lines[0].rstrip().endswith(":") and len(lines[0]) < 80:
        # A preamble such as "Here's the user's next message:"; the message follows, if at all.
        text = "\n".join(lines[1:]).strip()
        if not text:
            return None
    text = _SPEAKER.sub("", text, count=1)
    cut = _OTHER_SPEAKER.search(text)  # the model went on to write the assistant's part too
    if cut:
        text = text[: cut.start()]
    text = text.strip().strip('"').strip()
    if len(text) < 2 or re.match(r"^\s*assistant\s*:", text, re.IGNORECASE):
        return None
    return text
