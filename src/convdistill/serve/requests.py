"""From an HTTP body to generation jobs: parse, validate, check limits, tokenize.

Everything a client can get wrong ends here as an APIError with a 4xx status; nothing past
this point sees an unchecked value.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect

from convdistill.serve.chat_model import ChatModel
from convdistill.serve.errors import APIError
from convdistill.serve.limits import Limits
from convdistill.serve.sampling import SamplingParams
from convdistill.serve.schema import ChatCompletionRequest


@dataclass(frozen=True)
class Plan:
    request: ChatCompletionRequest
    prompt_ids: list[int]
    params: SamplingParams
    seeds: list[int]  # one per choice


# A refused body is still read (and dropped) up to this much: a client that sends its whole body
# before reading the answer (urllib, most simple clients) would otherwise see the connection
# reset under its write, not the 413. Beyond it the connection is closed unread: the client
# wastes our bandwidth no further.
DRAIN_BYTES = 64 * 2**20
DRAIN_SECONDS = 10.0
RequestT = TypeVar("RequestT", bound=BaseModel)
T = TypeVar("T")
_TOKENIZER_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="convdistill-tokenize")


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing (413) as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        await _drain(request, int(declared))
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            await _drain(request, DRAIN_BYTES)  # chunked upload: the size is not known
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> APIError:
    # Connection: close, as the body may not have been read to its end
    return APIError(
        413,
        f"request body exceeds {limit} bytes",
        "request_too_large",
        headers={"Connection": "close"},
    )


async def _drain(request: Request, size: int) -> None:
    """Read and drop the rest of the body, if it is at most DRAIN_BYTES, in DRAIN_SECONDS."""
    if size > DRAIN_BYTES:
        return
    read = 0
    with contextlib.suppress(TimeoutError, ClientDisconnect):
        async with asyncio.timeout(DRAIN_SECONDS):
            async for chunk in request.stream():
                read += len(chunk)
                if read > DRAIN_BYTES:
                    return


async def in_tokenizer_thread(function: Callable[..., T], *args: Any) -> T:
    """Run a tokenizer call off the event loop, in the one tokenizer thread."""
    return await asyncio.get_running_loop().run_in_executor(_TOKENIZER_THREAD, function, *args)


def parse_request(body: bytes, schema: type[RequestT]) -> RequestT:
    """The body as `schema`, or a 400 naming the first bad field."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise APIError(400, f"the body is not valid JSON: {exc}", "invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, "the body must be a JSON object", "invalid_request")
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        message = first["msg"].removeprefix("Value error, ")
        more = len(exc.errors()) - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        where = f"{param}: " if param else ""
        raise APIError(400, f"{where}{message}{suffix}", "invalid_value", param) from None


async def plan_request(req: ChatCompletionRequest, model: ChatModel, limits: Limits) -> Plan:
    if len(req.messages) > limits.max_messages:
        raise APIError(
            413,
            f"{len(req.messages)} messages; at most {limits.max_messages} are accepted",
            "too_many_messages",
            "messages",
        )
    messages = [m.as_dict() for m in req.messages]
    chars = sum(len(m["content"]) for m in messages)
    if chars > limits.max_chars:
        raise APIError(
            413,
            f"the messages hold {chars} characters; at most {limits.max_chars} are accepted",
            "too_many_characters",
            "messages",
        )
    if req.n > limits.max_n:
        raise APIError(400, f"n={req.n}; at most {limits.max_n}", "invalid_value", "n")
    stops = req.stop_list()
    if len(stops) > limits.max_stop:
        raise APIError(
            400, f"{len(stops)} stop strings; at most {limits.max_stop}", "invalid_value", "stop"
        )
    asked = req.requested_max_tokens()
    if asked is not None and asked > limits.max_tokens:
        raise APIError(
            400, f"max_tokens={asked}; at most {limits.max_tokens}", "invalid_value", "max_tokens"
        )

    # The chat template and tokenizer run off the event loop (a long prompt takes milliseconds),
    # in one thread of their own rather than anyio's pool of 40: ChatModel encodes one prompt
    # at a time anyway, and each pool thread kept its own malloc arena of freed tokenizer
    # buffers: refused 20,000-token prompts left the server 200 MB larger.
    try:
        prompt_ids = await in_tokenizer_thread(model.prompt_ids, messages)
    except ValueError as exc:
        raise APIError(400, str(exc), "invalid_messages", "messages") from None
    if len(prompt_ids) > limits.max_prompt_tokens:
        raise APIError(
            400,
            f"the prompt is {len(prompt_ids)} tokens; this server accepts at most "
            f"{limits.max_prompt_tokens}",
            "context_length_exceeded",
            "messages",
        )
    max_tokens = asked if asked is not None else limits.default_max_tokens
    if model.context_length is not None:
        room = model.context_length - len(prompt_ids)
        if asked is not None and asked > room:
            raise APIError(
                400,
                f"the prompt ({len(prompt_ids)} tokens) plus max_tokens ({asked}) "
                f"exceeds the model's context of {model.context_length} tokens",
                "context_length_exceeded",
                "max_tokens",
            )
        if room < 1:
            raise APIError(
                400,
                f"the prompt ({len(prompt_ids)} tokens) fills the model's context "
                f"of {model.context_length} tokens",
                "context_length_exceeded",
                "messages",
            )
        max_tokens = min(max_tokens, room)

    return Plan(req, prompt_ids, req.sampling_params(max_tokens), req.choice_seeds(req.n))
