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


Event = Delta | Finished | Failed


@dataclass(eq=False)
class Job:
    """One choice of one request: a row of a generation batch."""

    prompt_ids: list[int]
    params: SamplingParams
    seed: int
    index: int
    emit: Callable[[Event], None]  # thread-safe: called from the worker thread
    cancelled: bool = field(default=False)  # set by the request side when the client went away
