"""OpenAI's (legacy) completions API, with log-probabilities, and vLLM's tokenizer endpoints.

`/v1/completions` is what scores text: with `echo` and `logprobs` the answer carries the
log-probability of every prompt token, which lm-evaluation-harness asks for multiple-choice
tasks and `train distill` asks for a served teacher's logit cache. Prompts are text or token
ids (one or a batch); vLLM's `return_tokens_as_token_ids` names tokens `token_id:<id>` so that
ids survive the JSON (two ids can decode to the same string). Jobs run in the same batches as
chat requests.

`/tokenize`, `/detokenize` and `/tokenizer_info` answer as vLLM's do, so lm-evaluation-harness's
`tokenizer_backend=remote` and the teacher's vocabulary check work against this server too.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from pydantic import Field, model_validator

from convdistill.serve.chat_model import ChatModel
from convdistill.serve.errors import APIError
from convdistill.serve.events import Delta, Event, Failed, Finished, Job, Logprobs, TokenLogprob
from convdistill.serve.limits import Limits
from convdistill.serve.requests import in_tokenizer_thread
from convdistill.serve.sampling import SamplingParams
from convdistill.serve.schema import ChatMessage, SamplingRequest, StrictModel

MAX_LOGPROBS = 20  # OpenAI's limit, and vLLM's default --max-logprobs
DEFAULT_MAX_TOKENS = 16  # OpenAI's default for completions
TOKEN_ID_PREFIX = "token_id:"  # vLLM's return_tokens_as_token_ids


class CompletionRequest(SamplingRequest):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(default=None, ge=0)
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    return_tokens_as_token_ids: bool = False
    suffix: str | None = None
    best_of: int | None = None

    @model_validator(mode="after")
    def _unsupported(self) -> CompletionRequest:
        if self.stream:
            raise ValueError("stream is not supported on /v1/completions (use chat completions)")
        if self.suffix:
            raise ValueError("suffix (insertion) is not supported by this server")
        if self.best_of not in (None, 1, self.n):
            raise ValueError("best_of other than n is not supported by this server")
        if self.max_tokens == 0 and not self.echo:
            raise ValueError("max_tokens 0 asks for nothing; it is only useful with echo")
        return self

    def prompt_list(self) -> list[str | list[int]]:
        """The prompts as a list: texts or token-id lists."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if prompt and isinstance(prompt[0], int):
            return [[t for t in prompt if isinstance(t, int)]]  # one prompt of token ids
        return [p for p in prompt if isinstance(p, str | list)]


@dataclass(frozen=True)
class CompletionPlan:
    request: CompletionRequest
    prompts: list[list[int]]
    texts: list[str | None]  # a prompt's own text when it came as text (echoed as is)
    params: SamplingParams
    seeds: list[int]  # one per choice; choice i*n + j is prompt i's j-th

    def jobs(self, emit: Any) -> list[Job]:
        n, req = self.request.n, self.request
        return [
            Job(self.prompts[index // n], self.params, seed, index, emit,
                logprobs=req.logprobs, prompt_logprobs=req.logprobs if req.echo else None)
            for index, seed in enumerate(self.seeds)
        ]


def _too_many(what: str, count: int, limit: int, param: str, status: int = 400) -> APIError:
    return APIError(status, f"{count} {what}; at most {limit} are accepted", "invalid_value", param)


async def plan_completion(req: CompletionRequest, model: ChatModel, limits: Limits) -> CompletionPlan:
    """Check a completions request against the model and the limits; tokenize text prompts."""
    if model.is_encoder_decoder and req.echo:
        raise APIError(400, "echo is for decoder-only models: an encoder-decoder model's prompt is "
                       "encoder input and has no log-probabilities", "invalid_value", "echo")
    prompts = req.prompt_list()
    if not prompts:
        raise APIError(400, "prompt: the list is empty", "invalid_value", "prompt")
    choices = len(prompts) * req.n
    if req.n > limits.max_n:
        raise _too_many("choices per prompt (n)", req.n, limits.max_n, "n")
    if choices > limits.max_pending:
        raise _too_many("prompts x n", choices, limits.max_pending, "prompt")
    stops = req.stop_list()
    if len(stops) > limits.max_stop:
        raise _too_many("stop strings", len(stops), limits.max_stop, "stop")
    asked = req.max_tokens
    if asked is not None and asked > limits.max_tokens:
        raise APIError(400, f"max_tokens={asked}; at most {limits.max_tokens}", "invalid_value",
                       "max_tokens")
    texts: list[str | None] = [p if isinstance(p, str) else None for p in prompts]
    chars = sum(len(t) for t in texts if t is not None)
    if chars > limits.max_chars:
        raise _too_many("characters in the prompts", chars, limits.max_chars, "prompt", 413)
    ids: list[list[int]] = []
    rows = model.vocab_rows
    for i, prompt in enumerate(prompts):
        param = "prompt" if len(prompts) == 1 else f"prompt.{i}"
        tokens: list[int] = (await in_tokenizer_thread(model.encode_text, prompt) if isinstance(prompt, str)
                             else prompt)
        bad = next((t for t in tokens if not 0 <= t < rows), None)
        if bad is not None:
            raise APIError(400, f"{param}: token id {bad} is outside the vocabulary (0..{rows - 1})",
                           "invalid_value", param)
        if not tokens:
            raise APIError(400, f"{param}: the prompt is empty (no tokens)", "invalid_value", param)
        if len(tokens) > limits.max_prompt_tokens:
            raise APIError(400, f"{param}: the prompt is {len(tokens)} tokens; this server accepts "
                           f"at most {limits.max_prompt_tokens}", "context_length_exceeded", param)
        ids.append(list(tokens))
    max_tokens = asked if asked is not None else min(DEFAULT_MAX_TOKENS, limits.max_tokens)
    if model.context_length is not None:
        longest = max(map(len, ids))
        room = model.context_length - longest
        if asked is None:  # as chat does: a default that does not fit shrinks to the room left
            max_tokens = max(0, min(max_tokens, room))
        if max_tokens > room:
            raise APIError(400, f"the prompt ({longest} tokens) plus max_tokens ({max_tokens}) exceeds "
                           f"the model's context of {model.context_length} tokens",
                           "context_length_exceeded", "max_tokens")
        if max_tokens == 0 and not req.echo:
            raise APIError(400, f"the prompt ({longest} tokens) fills the model's context of "
                           f"{model.context_length} tokens", "context_length_exceeded", "prompt")
    return CompletionPlan(req, ids, texts, req.sampling_params(max_tokens), req.choice_seeds(choices))


@dataclass
class CompletionChoice:
    text: str = ""
    reason: str | None = None
    tokens: int = 0
    prompt_entries: tuple[TokenLogprob, ...] = ()
    generated: list[TokenLogprob] | None = None


async def collect_choices(jobs: list[Job], events: asyncio.Queue[Event | None]) -> list[CompletionChoice] | None:
    """Every job's text, finish reason and log-probabilities; None if the client has gone."""
    choices = [CompletionChoice(generated=[]) for _ in jobs]
    left = len(jobs)
    while left:
        event = await events.get()
        if event is None:
            return None
        choice = choices[event.index]
        if isinstance(event, Delta):
            choice.text += event.text
        elif isinstance(event, Logprobs):
            if event.prompt:
                choice.prompt_entries = event.entries
            else:
                assert choice.generated is not None
                choice.generated.extend(event.entries)
        elif isinstance(event, Finished):
            choice.reason, choice.tokens = event.reason, event.completion_tokens
            left -= 1
        elif isinstance(event, Failed):
            raise APIError(500, event.message, "generation_failed")
    return choices


def completion_body(plan: CompletionPlan, choices: list[CompletionChoice], model: ChatModel,
                    completion_id: str, fingerprint: str) -> dict[str, Any]:
    """OpenAI's text_completion object (tokenizer calls: run it in the tokenizer thread)."""
    req = plan.request
    out = []
    for index, choice in enumerate(choices):
        prompt_index = index // req.n
        prompt_ids = plan.prompts[prompt_index]
        text = choice.text
        if req.echo:
            prompt_text = plan.texts[prompt_index]
            text = (model.decode(prompt_ids) if prompt_text is None else prompt_text) + text
        logprobs = None
        if req.logprobs is not None:
            logprobs = _logprobs_object(choice, prompt_ids if req.echo else None, model,
                                        req.return_tokens_as_token_ids)
        out.append({"index": index, "text": text, "logprobs": logprobs,
                    "finish_reason": choice.reason})
    prompt_tokens = sum(map(len, plan.prompts))
    completion_tokens = sum(c.tokens for c in choices)
    return {
        "id": completion_id,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model.name,
        "system_fingerprint": fingerprint,
        "choices": out,
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def _logprobs_object(choice: CompletionChoice, echoed: list[int] | None, model: ChatModel,
                     as_ids: bool) -> dict[str, Any]:
    """{tokens, token_logprobs, top_logprobs, text_offset}: the prompt's tokens first when
    echoed (the first has no log-probability: nothing precedes it), then the generated ones.
    Each top_logprobs entry holds the `logprobs` likeliest tokens plus the chosen one, as
    vLLM's does."""
    entries: list[TokenLogprob | None] = []
    ids: list[int] = []
    if echoed is not None:
        entries = [None, *choice.prompt_entries]
        ids = list(echoed)
    for generated in choice.generated or []:
        entries.append(generated)
        ids.append(generated.token_id)
    every_id = sorted({i for e in entries if e is not None for i, _ in e.top} | set(ids))
    strings = dict(zip(every_id, model.token_strings(every_id), strict=True))
    names = {i: f"{TOKEN_ID_PREFIX}{i}" for i in every_id} if as_ids else strings
    tokens = [names[i] for i in ids]
    offsets, at = [], 0
    for i in ids:  # where each token starts in `text`, token strings laid end to end
        offsets.append(at)
        at += len(strings[i])
    top: list[dict[str, float] | None] = []
    for entry in entries:
        if entry is None:
            top.append(None)
            continue
        alternatives = {names[i]: value for i, value in entry.top}
        alternatives.setdefault(names[entry.token_id], entry.logprob)
        top.append(alternatives)
    return {
        "tokens": tokens,
        "token_logprobs": [None if e is None else e.logprob for e in entries],
        "top_logprobs": top,
        "text_offset": offsets,
    }


# -- vLLM's tokenizer endpoints ---------------------------------------------------------------


class TokenizeRequest(StrictModel):
    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool = True
    add_generation_prompt: bool = True

    @model_validator(mode="after")
    def _one_input(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt and messages")
        return self


class DetokenizeRequest(StrictModel):
    model: str | None = None
    tokens: list[int]


async def tokenize(req: TokenizeRequest, model: ChatModel, limits: Limits) -> dict[str, Any]:
    if req.messages is not None:
        if not req.add_generation_prompt:
            raise APIError(400, "add_generation_prompt false is not supported", "invalid_value",
                           "add_generation_prompt")
        messages = [m.as_dict() for m in req.messages]
        try:
            tokens = await in_tokenizer_thread(model.prompt_ids, messages)
        except ValueError as exc:
            raise APIError(400, str(exc), "invalid_messages", "messages") from None
    else:
        assert req.prompt is not None
        if len(req.prompt) > limits.max_chars:
            raise _too_many("characters", len(req.prompt), limits.max_chars, "prompt", 413)
        tokens = await in_tokenizer_thread(model.encode_text, req.prompt, req.add_special_tokens)
    return {"count": len(tokens), "max_model_len": model.context_length, "tokens": tokens,
            "token_strs": None}


async def detokenize(req: DetokenizeRequest, model: ChatModel) -> dict[str, Any]:
    rows = model.vocab_rows
    bad = next((t for t in req.tokens if not 0 <= t < rows), None)
    if bad is not None:
        raise APIError(400, f"tokens: token id {bad} is outside the vocabulary (0..{rows - 1})",
                       "invalid_value", "tokens")
    return {"prompt": await in_tokenizer_thread(model.decode, req.tokens)}
