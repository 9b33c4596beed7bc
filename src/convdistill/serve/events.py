"""What a generation job is, and what the worker reports back about it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from convdistill.serve.sampling import SamplingParams


@dataclass(frozen=True)
class Delta:
    index: int  # choice index within its request
    text: str


@dataclass(frozen=True)
class Finished:
    index: int
    reason: str  # "stop" or "length" (OpenAI's finish_reason); "cancelled" is never sent out
    completion_tokens: int


@dataclass(frozen=True)
class Failed:
    index: int
    message: str


@dataclass(frozen=True)
class TokenLogprob:
    """One token with its log-probability and the most likely alternatives at its position
    (the model's own distribution, before temperature or top_p), best first."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...]


@dataclass(frozen=True)
class Logprobs:
    """Log-probabilities for a job (/v1/completions with `logprobs`): once for the prompt
    (`echo`; its first token has none, so `entries` start at the second), then once per
    generated token, the end-of-turn token included."""

    index: int
    entries: tuple[TokenLogprob, ...]
    prompt: bool = False


Event = Delta | Finished | Failed | Logprobs


@dataclass(eq=False)
class Job:
    """One choice of one request: a row of a generation batch."""

    prompt_ids: list[int]
    params: SamplingParams
    seed: int
    index: int
    emit: Callable[[Event], None]  # thread-safe: called from the worker thread
    cancelled: bool = field(default=False)  # set by the request side when the client went away
    logprobs: int | None = None  # top alternatives per generated token; None: no log-probabilities
    prompt_logprobs: int | None = None  # the same for every prompt token (completions' `echo`)
