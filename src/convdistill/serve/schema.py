"""The request side of OpenAI's chat completions API, as far as this server implements it.

Strict types (no "1" for 1, no true for 1), unknown fields ignored: clients such as LangChain
send fields this server has no use for (e.g. `user`, penalties), and refusing them would
break those clients for nothing. Features that would silently change meaning if ignored
(tools, logprobs, non-text content) are refused instead.
"""

from __future__ import annotations

import secrets
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from convdistill.serve.sampling import SamplingParams


class StrictModel(BaseModel):
    """A request body part: types checked strictly (no coercion of "1" to 1), unknown fields
    ignored, as OpenAI's clients send fields a server may not know."""

    model_config = ConfigDict(strict=True, extra="ignore")


class TextPart(StrictModel):
    type: Literal["text"]
    text: str


class ChatMessage(StrictModel):
    # "developer" is what newer OpenAI clients call the system role.
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)

    def as_dict(self) -> dict[str, str]:
        return {"role": "system" if self.role == "developer" else self.role, "content": self.text()}


class StreamOptions(StrictModel):
    include_usage: bool = False


class SamplingRequest(StrictModel):
    """What chat and completions requests share: the model name, sampling settings, choices."""

    model: str | None = None  # echoed back; never loads anything (one model per server)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1)
    seed: int | None = None
    stream: bool = False

    @field_validator("stop")
    @classmethod
    def _stop_strings(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if any(not s for s in stops):
            raise ValueError("stop strings must not be empty")
        return value

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def sampling_params(self, max_tokens: int) -> SamplingParams:
        return SamplingParams(
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            max_tokens=max_tokens,
            stop=self.stop_list(),
        )

    def choice_seeds(self, choices: int) -> list[int]:
        """A seed per choice: choice i uses seed + i % n (n choices per prompt), so a seeded
        request samples the same alone or in a batch."""
        base = self.seed if self.seed is not None else secrets.randbits(62)
        return [(base + index % self.n) % 2**63 for index in range(choices)]


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)  # the newer name of max_tokens
    stream_options: StreamOptions | None = None
    logprobs: bool | None = None
    tools: list[Any] | None = None

    @model_validator(mode="after")
    def _unsupported(self) -> ChatCompletionRequest:
        if self.logprobs:
            raise ValueError("logprobs are not supported by this server")
        if self.tools:
            raise ValueError("tools (function calling) are not supported by this server")
        return self

    def requested_max_tokens(self) -> int | None:
        return (
            self.max_completion_tokens
            if self.max_completion_tokens is not None
            else self.max_tokens
        )
