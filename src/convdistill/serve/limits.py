"""How big a request may be. Every limit is configurable (`convdistill serve --help`).

Sizes (body bytes, message count, characters) are checked before any tokenizing, so an
oversized request costs next to nothing; token counts are checked after the chat template is
applied, against these limits and against the model's context length.
"""

from __future__ import annotations

from dataclasses import dataclass

from convdistill.errors import BadRecipe


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 1_000_000  # 413 beyond
    max_messages: int = 256  # 413 beyond
    max_chars: int = 100_000  # all message contents together; 413 beyond
    max_prompt_tokens: int = 4096  # after the chat template; 400 beyond
    max_tokens: int = 1024  # largest max_tokens a request may ask; 400 beyond
    default_max_tokens: int = 256  # when a request names none
    max_n: int = 8  # choices per request; 400 beyond
    max_stop: int = 4  # stop strings per request (OpenAI's limit); 400 beyond
    max_pending: int = 512  # generations queued or running; 429 beyond

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value < 1:
                raise BadRecipe(f"limit {name} must be at least 1, got {value}")
        if self.default_max_tokens > self.max_tokens:
            raise BadRecipe("default_max_tokens cannot exceed max_tokens")
