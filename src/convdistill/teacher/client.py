"""The teacher's side of an OpenAI-compatible endpoint: cached, bounded, retried, budgeted.

Any server that speaks the chat completions API works: OpenAI, vLLM, llama.cpp, or
`convdistill serve`. Requests go out as plain HTTP (httpx + orjson): the protocol is one JSON
POST, and at a concurrency of 32 a run waits on whatever CPU each request costs, so it stays
lean (no pydantic models per response, as the openai package builds).
Retries are ours: they also cover malformed or empty answers, count every attempt against the
budget, and are reported.

Retried: timeouts, connection errors, 429 (waiting what Retry-After says), 5xx, and answers that
are malformed or fail the caller's check (with a new seed, since a seeded endpoint would repeat
itself). Fatal for the run: 401/403/404 (a wrong key, model or URL will not heal). Other 4xx
fail that request only; the run goes on and reports it.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from convdistill.errors import Unavailable
from convdistill.http_retry import RetryPolicy, retry_after_seconds, transient
from convdistill.teacher.request_cache import CachedAnswer, RequestCache, request_key

Validator = Callable[[str], "str | None"]  # cleaned answer, or None when it is unusable


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[tuple[str, str], ...]  # (role, content) pairs
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int = 0
    purpose: str = "teacher"  # teacher | simulator | rank: for the report, not the cache key

    def payload(self, model: str, seed: int | None = None) -> dict[str, Any]:
        return {
            "model": model,
            "messages": [{"role": r, "content": c} for r, c in self.messages],
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed if seed is None else seed,
        }


@dataclass(frozen=True)
class Answer:
    text: str
    created_date: str
    cached: bool


@dataclass(frozen=True)
class EndpointSettings:
    base_url: str
    model: str
    api_key: str | None = None  # default: $OPENAI_API_KEY; never logged or stored
    concurrency: int = 8
    timeout_s: float = 120.0
    max_retries: int = 6
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0


@dataclass
class Budget:
    max_requests: int | None = None  # requests sent (retries included); cache hits are free
    max_tokens: int | None = None  # prompt + completion tokens of requests sent

    def exhausted(self, usage: Usage) -> bool:
        if self.max_requests is not None and usage.requests_sent >= self.max_requests:
            return True
        return self.max_tokens is not None and usage.prompt_tokens + usage.completion_tokens >= self.max_tokens


@dataclass
class Usage:
    requests_sent: int = 0
    answers_received: int = 0
    cache_hits: int = 0
    retries: int = 0
    failed_requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # tokens that cache hits saved
    by_purpose: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)  # retried or failed error kinds

    def cost(self, price_in_per_1k: float, price_out_per_1k: float) -> float:
        return self.prompt_tokens / 1000 * price_in_per_1k + self.completion_tokens / 1000 * price_out_per_1k


class BudgetExhausted(Exception):
    """No more requests may be sent; what is done so far is kept. (Control flow: the run stops
    sending and reports it; never shown as an error.)"""


class FatalEndpointError(Unavailable):
    """The endpoint refuses every request (wrong key, model or URL): stop the run."""


class RequestFailed(Unavailable):
    """One request gave no usable answer after all retries (the endpoint did not answer usably)."""


class RequestPending(RequestFailed):
    """Collecting a batch file (`--batch-out`): the request has no answer yet and was added to
    the round's batch; whatever depends on it waits for the next round."""


def clean_answer(text: str, validate: Validator | None) -> str | None:
    """The usable form of an answer, or None: the caller's check, else the stripped text."""
    return validate(text) if validate else (text.strip() or None)


def attempt_payload(request: ChatRequest, model: str, attempt: int) -> dict[str, Any]:
    """The payload of a request's attempt: a retry after an unusable answer gets a new seed,
    since a seeded endpoint would give the same unusable answer again."""
    return request.payload(model, request.seed + attempt if attempt else None)


class TeacherClient:
    """Use as ``async with TeacherClient(...) as client: await client.complete(request)``."""

    def __init__(
        self,
        endpoint: EndpointSettings,
        cache: RequestCache | None = None,
        budget: Budget | None = None,
        created_date: str | None = None,
    ):
        self.endpoint = endpoint
        self.cache = cache
        self.budget = budget or Budget()
        self.usage = Usage()
        self.created_date = created_date  # pin for reproducible output; else arrival time
        # With collect_pending (`--batch-out`), a request without an answer is never sent: its
        # payload lands here, by custom_id, and the request raises RequestPending.
        self.collect_pending = False
        self.pending: dict[str, dict[str, Any]] = {}
        self._semaphore = asyncio.Semaphore(endpoint.concurrency)
        self._client: httpx.AsyncClient | None = None
        self._url = ""
        self._rng = random.Random(0)  # jitter only
        self._policy = RetryPolicy(endpoint.max_retries, endpoint.backoff_base_s, endpoint.backoff_max_s)

    async def __aenter__(self) -> TeacherClient:
        key = self.endpoint.api_key or os.environ.get("OPENAI_API_KEY")
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        limits = httpx.Limits(
            max_connections=self.endpoint.concurrency, max_keepalive_connections=self.endpoint.concurrency
        )
        self._client = httpx.AsyncClient(
            headers=headers, timeout=self.endpoint.timeout_s, limits=limits, follow_redirects=True
        )
        self._url = self.endpoint.base_url.rstrip("/") + "/chat/completions"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def complete(self, request: ChatRequest, validate: Validator | None = None) -> Answer:
        """The answer to a request: from the cache, else from the endpoint (then cached)."""
        model = self.endpoint.model
        key = request_key(request.payload(model))
        if self.cache is not None:
            hit = self.cache.get(key)
            # A cached answer is checked again: a stricter check since it was cached (a fixed
            # cleaner, a new template) must not let an old unusable answer through.
            if hit is not None and (validate is None or validate(hit.text) == hit.text):
                self.usage.cache_hits += 1
                self.usage.cached_tokens += hit.prompt_tokens + hit.completion_tokens
                return Answer(hit.text, hit.created_date, cached=True)
        first_attempt = 0
        if self.cache is not None:
            answer, first_attempt = self._from_batch_answers(request, validate, key)
            if answer is not None:
                return answer
        if self.collect_pending:
            payload = attempt_payload(request, model, first_attempt)
            self.pending[request_key(payload)] = payload
            raise RequestPending("waiting for the batch file's answer")
        async with self._semaphore:
            text, prompt_tokens, completion_tokens = await self._send_with_retries(request, validate, first_attempt)
        created = self.created_date or datetime.now(UTC).isoformat(timespec="seconds")
        if self.cache is not None:
            self.cache.put(key, model, CachedAnswer(text, prompt_tokens, completion_tokens, created))
        return Answer(text, created, cached=False)

    def _from_batch_answers(self, request: ChatRequest, validate: Validator | None, key: str
                            ) -> tuple[Answer | None, int]:
        """The first usable answer a batch file brought for this request's attempts, checked as
        a live answer is (then cached like one); else None and the attempt to make next."""
        assert self.cache is not None
        model = self.endpoint.model
        for attempt in self._policy.attempts():
            raw = self.cache.get_batch_answer(request_key(attempt_payload(request, model, attempt)))
            if raw is None:
                return None, attempt
            cleaned = clean_answer(raw.text, validate)
            if cleaned:
                created = self.created_date or raw.created_date
                self.cache.put(key, model, CachedAnswer(cleaned, raw.prompt_tokens, raw.completion_tokens, created))
                self.usage.cache_hits += 1
                self.usage.cached_tokens += raw.prompt_tokens + raw.completion_tokens
                return Answer(cleaned, created, cached=True), attempt
            self.usage.errors["empty or unusable answer (batch)"] += 1
        self.usage.failed_requests += 1
        raise RequestFailed(f"no usable answer in {self._policy.tries} batch answers")

    async def _send_with_retries(self, request: ChatRequest, validate: Validator | None,
                                 first_attempt: int = 0) -> tuple[str, int, int]:
        assert self._client is not None, "use TeacherClient in `async with`"
        settings = self.endpoint
        policy = self._policy
        last_error = "no attempt"
        for attempt in policy.attempts(first_attempt):
            if self.budget.exhausted(self.usage):
                raise BudgetExhausted()
            wait: float | None = None
            self.usage.requests_sent += 1
            self.usage.by_purpose[request.purpose] += 1
            try:
                response = await self._client.post(
                    self._url, content=orjson.dumps(attempt_payload(request, settings.model, attempt))
                )
            except httpx.TimeoutException:
                last_error = "timeout"
            except httpx.TransportError:
                last_error = "connection error"
            else:
                status = response.status_code
                if status == 200:
                    parsed = _parse_completion(response.content)
                    if parsed is None:
                        last_error = "malformed response"
                    else:
                        text, prompt_tokens, completion_tokens = parsed
                        self.usage.answers_received += 1
                        self.usage.prompt_tokens += prompt_tokens
                        self.usage.completion_tokens += completion_tokens
                        cleaned = clean_answer(text, validate)
                        if cleaned:
                            return cleaned, prompt_tokens, completion_tokens
                        last_error = "empty or unusable answer"
                elif status in (401, 403, 404):
                    raise FatalEndpointError(f"{status} from {self._url}: {_error_message(response)}")
                elif transient(status):
                    last_error = "429 rate limited" if status == 429 else f"{status} server error"
                    wait = retry_after_seconds(response.headers)
                else:
                    self.usage.failed_requests += 1
                    self.usage.errors[str(status)] += 1
                    raise RequestFailed(f"{status}: {_error_message(response)}")
            self.usage.errors[last_error] += 1
            if policy.retries_left(attempt):
                self.usage.retries += 1
                await asyncio.sleep(policy.delay(attempt, wait, self._rng))
        self.usage.failed_requests += 1
        raise RequestFailed(f"no usable answer after {policy.tries} attempts ({last_error})")


def _parse_completion(body: bytes) -> tuple[str, int, int] | None:
    """(text, prompt tokens, completion tokens) of a chat completion body, or None if malformed."""
    try:
        return completion_fields(orjson.loads(body))
    except orjson.JSONDecodeError:
        return None


def completion_fields(data: Any) -> tuple[str, int, int] | None:
    """(text, prompt tokens, completion tokens) of a parsed chat completion, or None if malformed."""
    try:
        message = data["choices"][0]["message"]
        text = message.get("content") or ""
        usage = data.get("usage") or {}
        if not isinstance(text, str):
            return None
        return text, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return None


def _error_message(response: httpx.Response) -> str:
    """The server's error message (OpenAI error body), short; never request headers or keys."""
    try:
        error = orjson.loads(response.content).get("error")
        text = error.get("message") if isinstance(error, dict) else str(error)
    except (orjson.JSONDecodeError, AttributeError):
        text = response.text
    return (text or response.reason_phrase or "")[:200]
