"""A teacher behind an OpenAI-compatible endpoint: its top-k log-probabilities over HTTP.

The teacher may be far larger than anything that fits beside the student (a 70B model behind
vLLM on a GPU box). It scores the student's own token ids through `/v1/completions` with
`echo`, `logprobs: k`, `max_tokens: 1` and vLLM's `return_tokens_as_token_ids` (so that every
alternative comes back as an id, not a string two ids may share): entry t + 1 of the echoed
`top_logprobs` is the teacher's distribution after reading tokens 0..t, which is exactly what
the local teacher computes at position t. `max_tokens: 1`, not 0: vLLM refuses 0, and the
generated token's entry is the distribution after the whole sequence. Any server that returns
prompt log-probabilities by token id works: vLLM, `convdistill serve`.

Before anything is scored, the endpoint's own tokenizer (vLLM's `/tokenize`) must encode the
student's texts to the student's ids, or the ids sent would mean other strings to it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import torch

from convdistill.errors import Unavailable
from convdistill.http_retry import RetryPolicy, transient
from convdistill.trainers.teacher_scoring import ScoringJob, hand_out, length_batches
from convdistill.trainers.vocab_check import ADVICE, VocabularyMismatch

TOKEN_ID_PREFIX = "token_id:"
MAX_LOGPROBS = 20  # OpenAI's limit and vLLM's default --max-logprobs
# Texts that tell tokenizers apart where sample data may not: case, digits, spacing, accents,
# other scripts, emoji, code.
PROBE = ("Hello, World! 12345 6.7e-8  double  spaces\tand\ttabs\nnaïve café Straße "
         "Привет мир 你好世界 こんにちは 🙂👍 def f(x): return x**2 # ok")


class ServedTeacherError(Unavailable, ValueError):
    """The endpoint cannot serve as a teacher (refuses, is unreachable, or answers without
    token ids); the message names the endpoint."""


@dataclass(frozen=True)
class ServedTeacher:
    base_url: str  # e.g. http://gpu-box:8000/v1
    model: str
    api_key: str | None = None  # default: $OPENAI_API_KEY; never logged or stored
    timeout_s: float = 600.0
    concurrency: int = 4  # requests in flight: the server batches what arrives together
    max_retries: int = 3

    @property
    def name(self) -> str:
        return f"{self.model} at {self.base_url}"

    def identity(self) -> dict[str, Any]:
        """What makes the cache this teacher's: the served model's name (not the URL, so a
        server moved to another port keeps its caches, as the request cache does)."""
        return {"served_model": self.model}

    @property
    def root(self) -> str:
        """vLLM serves /tokenize beside /v1, at the server's root."""
        return self.base_url.rstrip("/").removesuffix("/v1")

    def client(self) -> httpx.Client:
        key = self.api_key or os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(headers=headers, timeout=self.timeout_s)


def _post(client: httpx.Client, teacher: ServedTeacher, url: str, body: dict[str, Any]) -> Any:
    """POST with retries on connection errors, 429 and 5xx; any other refusal is fatal."""
    policy = RetryPolicy(teacher.max_retries, base_s=1.0, max_s=10.0)
    last = ""
    for attempt in policy.attempts():
        try:
            response = client.post(url, content=orjson.dumps(body),
                                   headers={"Content-Type": "application/json"})
        except httpx.TransportError as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if response.status_code == 200:
                try:
                    return orjson.loads(response.content)
                except orjson.JSONDecodeError:
                    last = "an answer that is not JSON"
            elif transient(response.status_code):
                last = f"{response.status_code} {response.text[:200]}"
            else:
                raise ServedTeacherError(f"teacher {teacher.name}: {url} answered "
                                         f"{response.status_code}: {response.text[:300]}")
        if policy.retries_left(attempt):
            time.sleep(policy.delay(attempt))
    raise ServedTeacherError(f"teacher {teacher.name}: {url} failed {policy.tries} times "
                             f"(last: {last})")


def check_tokenizer(teacher: ServedTeacher, tokenizer: Any, texts: Sequence[str]) -> None:
    """Refuse (VocabularyMismatch) a teacher whose tokenizer encodes any of `texts` or PROBE
    to other ids than the student's `tokenizer` does."""
    with teacher.client() as client:
        for text in (PROBE, *texts):
            body = {"model": teacher.model, "prompt": text, "add_special_tokens": False}
            answer = _post(client, teacher, f"{teacher.root}/tokenize", body)
            theirs = answer.get("tokens") if isinstance(answer, dict) else None
            if not isinstance(theirs, list):
                raise ServedTeacherError(f"teacher {teacher.name}: /tokenize gave no token list")
            ours = tokenizer(text, add_special_tokens=False)["input_ids"]
            if theirs != ours:
                at = next((i for i, (a, b) in enumerate(zip(theirs, ours, strict=False)) if a != b),
                          min(len(theirs), len(ours)))
                raise VocabularyMismatch(
                    f"teacher {teacher.name} tokenises differently from the student: {text[:60]!r} is "
                    f"{len(theirs)} tokens there, {len(ours)} here, first difference at token {at} "
                    f"({theirs[at:at + 3]} vs {ours[at:at + 3]}). {ADVICE}")


def _top_k(entry: Any, k: int, teacher: ServedTeacher) -> tuple[list[int], list[float]]:
    """The k likeliest (ids, log-probs) of one top_logprobs entry, best first (the entry may
    hold the chosen token beside its top k, as vLLM's does)."""
    if not isinstance(entry, dict) or len(entry) < k:
        raise ServedTeacherError(f"teacher {teacher.name}: a top_logprobs entry holds "
                                 f"{len(entry) if isinstance(entry, dict) else 'no'} tokens, "
                                 f"{k} were asked")
    ranked = sorted(entry.items(), key=lambda item: -item[1])[:k]  # stable: ties keep its order
    ids = []
    for name, _ in ranked:
        if not name.startswith(TOKEN_ID_PREFIX):
            raise ServedTeacherError(
                f"teacher {teacher.name} names tokens as text ({name!r}), not by id: the endpoint must "
                "support vLLM's return_tokens_as_token_ids (vLLM and convdistill serve do)")
        ids.append(int(name.removeprefix(TOKEN_ID_PREFIX)))
    return ids, [float(value) for _, value in ranked]


def score_jobs_served(
    teacher: ServedTeacher,
    jobs: Sequence[ScoringJob],
    k: int,
    max_batch_tokens: int = 4096,
    on_batch: Callable[[int], None] | None = None,
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Top-k (ids, log-probs) per example index, like `score_jobs`, from the endpoint: each
    batch of similar-length jobs is one request (a list of token-id prompts), and a few
    requests are in flight at once, so the server runs them batched."""
    if k > MAX_LOGPROBS:
        raise ServedTeacherError(f"kd_top_k {k}: a served teacher returns at most {MAX_LOGPROBS} "
                                 "log-probabilities per token (OpenAI's and vLLM's limit); set kd_top_k 20")
    url = teacher.base_url.rstrip("/") + "/completions"

    def request(client: httpx.Client, batch: list[ScoringJob]) -> tuple[torch.Tensor, torch.Tensor]:
        body = {"model": teacher.model, "prompt": [job.input_ids for job in batch], "max_tokens": 1,
                "temperature": 0.0, "echo": True, "logprobs": k, "return_tokens_as_token_ids": True}
        answer = _post(client, teacher, url, body)
        try:
            choices = sorted(answer["choices"], key=lambda c: c["index"])
            entries = [choice["logprobs"]["top_logprobs"] for choice in choices]
        except (KeyError, TypeError) as exc:
            raise ServedTeacherError(f"teacher {teacher.name}: a completions answer without "
                                     f"echoed log-probabilities ({type(exc).__name__}: {exc})") from None
        if len(entries) != len(batch):
            raise ServedTeacherError(f"teacher {teacher.name}: {len(entries)} choices for "
                                     f"{len(batch)} prompts")
        ids: list[list[int]] = []
        values: list[list[float]] = []
        for job, top in zip(batch, entries, strict=True):
            for position in job.all_positions():  # entry t + 1: the distribution after token t
                row_ids, row_values = _top_k(top[position + 1], k, teacher)
                ids.append(row_ids)
                values.append(row_values)
        return (torch.tensor(ids, dtype=torch.long).reshape(-1, k),
                torch.tensor(values, dtype=torch.float32).reshape(-1, k))

    out: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    batches = length_batches(jobs, max_batch_tokens)
    with teacher.client() as client, ThreadPoolExecutor(teacher.concurrency) as pool:
        for batch, (top_ids, top_log_probs) in zip(
                batches, pool.map(lambda b: request(client, b), batches), strict=True):
            hand_out(batch, top_ids, top_log_probs, out)
            if on_batch is not None:
                on_batch(sum(len(job.input_ids) for job in batch))
    return out
