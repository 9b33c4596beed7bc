"""The FastAPI app: OpenAI's chat completions (plain and streamed) and completions (with
log-probabilities), vLLM's tokenizer endpoints, models list, health.

One model per server, loaded before the app starts; the `model` field of a request is echoed
back and never loads anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from convdistill import __version__
from convdistill.serve.batcher import Batcher, Overloaded
from convdistill.serve.completions import (
    CompletionRequest,
    DetokenizeRequest,
    TokenizeRequest,
    collect_choices,
    completion_body,
    detokenize,
    plan_completion,
    tokenize,
)
from convdistill.serve.errors import APIError, error_body
from convdistill.serve.events import Delta, Event, Failed, Finished, Job
from convdistill.serve.limits import Limits
from convdistill.serve.requests import (
    Plan,
    in_tokenizer_thread,
    parse_request,
    plan_request,
    read_body,
)
from convdistill.serve.schema import ChatCompletionRequest

log = logging.getLogger("convdistill.serve")
FINGERPRINT = f"convdistill-{__version__}"


def create_app(
    batcher: Batcher, limits: Limits | None = None, api_key: str | None = None
) -> FastAPI:
    limits = limits or Limits()
    model = batcher.model
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        batcher.close()

    app = FastAPI(
        title="convdistill",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> Response:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        return JSONResponse(
            error_body(exc.status_code, str(exc.detail)), status_code=exc.status_code
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
        return JSONResponse(error_body(400, str(exc.errors()[:1])), status_code=400)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        log.exception("unexpected error")
        return JSONResponse(
            error_body(500, f"internal error: {type(exc).__name__}"), status_code=500
        )

    def authorize(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), api_key.encode()
        ):
            raise APIError(
                401, "missing or wrong API key (send Authorization: Bearer KEY)", "invalid_api_key"
            )

    def model_card() -> dict[str, Any]:
        return {"id": model.name, "object": "model", "created": created, "owned_by": "convdistill"}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": model.name,
            "pending": batcher.pending,
            "batches": batcher.batches,
            "rows": batcher.rows,
            "tokens": model.generated_tokens,
        }

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict[str, Any]:
        authorize(request)
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str, request: Request) -> dict[str, Any]:
        authorize(request)
        if model_id != model.name:
            raise APIError(
                404,
                f"model {model_id!r} is not served here (this server serves {model.name!r})",
                "model_not_found",
                "model",
            )
        return model_card()

    def start(
        request: Request, make_jobs: Callable[[Callable[[Event], None]], list[Job]]
    ) -> tuple[list[Job], asyncio.Queue[Event | None], asyncio.Task[None]]:
        """Queue a request's jobs; their events arrive on the returned queue."""
        events: asyncio.Queue[Event | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def emit(event: Event) -> None:  # called from the worker thread
            # RuntimeError: the loop is gone (server shutting down), nobody is listening.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(events.put_nowait, event)

        jobs = make_jobs(emit)
        try:
            batcher.submit(jobs)
        except Overloaded as exc:
            raise APIError(429, str(exc), "server_busy") from None
        # Neither uvicorn nor Starlette stops a plain (non-streamed) handler when its client
        # hangs up, and a stream only notices on its next write, which a queued request never
        # makes: so every request watches its own connection from the moment it is queued.
        watcher = asyncio.create_task(_watch_disconnect(request, batcher, jobs, events))
        return jobs, events, watcher

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        authorize(request)
        req = parse_request(await read_body(request, limits.max_body_bytes), ChatCompletionRequest)
        plan = await plan_request(req, model, limits)
        jobs, events, watcher = start(
            request,
            lambda emit: [
                Job(plan.prompt_ids, plan.params, seed, i, emit) for i, seed in enumerate(plan.seeds)
            ],
        )
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        if req.stream:
            return StreamingResponse(
                _stream(plan, jobs, events, completion_id, model.name, batcher, watcher),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        try:
            return await _complete(plan, jobs, events, completion_id, model.name)
        finally:
            watcher.cancel()
            batcher.cancel(jobs)  # finished jobs ignore it; unfinished ones stop

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        authorize(request)
        req = parse_request(await read_body(request, limits.max_body_bytes), CompletionRequest)
        plan = await plan_completion(req, model, limits)
        jobs, events, watcher = start(request, plan.jobs)
        try:
            choices = await collect_choices(jobs, events)
            if choices is None:  # the client has gone
                return Response(status_code=499)
            body = await in_tokenizer_thread(
                completion_body, plan, choices, model, f"cmpl-{uuid.uuid4().hex}", FINGERPRINT
            )
            return Response(orjson.dumps(body), media_type="application/json")
        finally:
            watcher.cancel()
            batcher.cancel(jobs)

    # vLLM's tokenizer endpoints, at the server's root as vLLM has them
    @app.post("/tokenize")
    async def tokenize_route(request: Request) -> dict[str, Any]:
        authorize(request)
        req = parse_request(await read_body(request, limits.max_body_bytes), TokenizeRequest)
        return await tokenize(req, model, limits)

    @app.post("/detokenize")
    async def detokenize_route(request: Request) -> dict[str, Any]:
        authorize(request)
        req = parse_request(await read_body(request, limits.max_body_bytes), DetokenizeRequest)
        return await detokenize(req, model)

    @app.get("/tokenizer_info")
    async def tokenizer_info(request: Request) -> dict[str, Any]:
        authorize(request)
        return model.tokenizer_info()

    return app


async def _watch_disconnect(
    request: Request, batcher: Batcher, jobs: list[Job], events: asyncio.Queue[Event | None]
) -> None:
    """Cancel `jobs` once the client has gone, and wake their handler with a None event.

    The body has been read, so the next ASGI message can only be `http.disconnect`: uvicorn
    sends it when the connection closes (or once the response is complete, when this task is
    cancelled anyway)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    batcher.cancel(jobs)
    events.put_nowait(None)


def _usage(plan: Plan, completion_tokens: int) -> dict[str, int]:
    prompt = len(plan.prompt_ids)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt + completion_tokens,
    }


async def _complete(
    plan: Plan, jobs: list[Job], events: asyncio.Queue[Event | None], completion_id: str, name: str
) -> Response:
    texts = [""] * len(jobs)
    reasons: list[str | None] = [None] * len(jobs)
    tokens = 0
    while any(r is None for r in reasons):
        event = await events.get()
        if event is None:  # the client has gone; this answer reaches nobody
            return Response(status_code=499)  # nginx's "client closed request", for the logs
        if isinstance(event, Delta):
            texts[event.index] += event.text
        elif isinstance(event, Finished):
            reasons[event.index] = event.reason
            tokens += event.completion_tokens
        elif isinstance(event, Failed):
            raise APIError(500, event.message, "generation_failed")
    return JSONResponse(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": name,
            "system_fingerprint": FINGERPRINT,
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": reason,
                }
                for i, (text, reason) in enumerate(zip(texts, reasons, strict=True))
            ],
            "usage": _usage(plan, tokens),
        }
    )


async def _stream(
    plan: Plan,
    jobs: list[Job],
    events: asyncio.Queue[Event | None],
    completion_id: str,
    name: str,
    batcher: Batcher,
    watcher: asyncio.Task[None],
) -> AsyncIterator[bytes]:
    """Server-sent events in OpenAI's chunk format, ending with `data: [DONE]`."""
    created = int(time.time())

    def chunk(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
        body: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": name,
            "system_fingerprint": FINGERPRINT,
            "choices": choices,
        }
        if usage is not None:
            body["usage"] = usage
        return b"data: " + orjson.dumps(body) + b"\n\n"

    def choice(index: int, delta: dict[str, str], reason: str | None = None) -> dict[str, Any]:
        return {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}

    try:
        for job in jobs:
            yield chunk([choice(job.index, {"role": "assistant", "content": ""})])
        left = len(jobs)
        tokens = 0
        while left:
            event = await events.get()
            if event is None:  # the client has gone
                return
            if isinstance(event, Delta):
                yield chunk([choice(event.index, {"content": event.text})])
            elif isinstance(event, Finished):
                left -= 1
                tokens += event.completion_tokens
                yield chunk([choice(event.index, {}, event.reason)])
            elif isinstance(event, Failed):  # headers are sent: the error goes in the stream
                yield b"data: " + orjson.dumps(error_body(500, event.message)) + b"\n\n"
                return
        options = plan.request.stream_options
        if options is not None and options.include_usage:
            yield chunk([], _usage(plan, tokens))
        yield b"data: [DONE]\n\n"
    finally:
        watcher.cancel()
        batcher.cancel(jobs)
