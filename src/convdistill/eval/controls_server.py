"""The control models (eval/controls.py) on an OpenAI-compatible endpoint: `convdistill eval
controls --serve`, and the tests, which score them through the real CLI and client over HTTP.

A module of its own because FastAPI reads the handlers' annotations at run time: its imports
must stand at module level, where the light controls module should not pay for them.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from convdistill.eval.controls import CONTROL_PREFIX, CONTROLS, References, control_names, control_reply, is_control
from convdistill.serve.errors import APIError


def controls_app(references: References = ()) -> Any:
    """A FastAPI app answering OpenAI chat completions (not streamed) for every control:
    `model` picks the control (`control:constant`, ...); `/v1/models` lists them."""
    app = FastAPI(title="convdistill controls", docs_url=None, redoc_url=None, openapi_url=None)
    created = int(time.time())
    pool = list(references)

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": created,
                                            "owned_by": "convdistill"} for name in control_names()]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise APIError(400, "the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise APIError(400, "the body must be a JSON object")
        model = body.get("model")
        if not isinstance(model, str) or not is_control(model) or model.removeprefix(CONTROL_PREFIX) not in CONTROLS:
            raise APIError(404, f"model {model!r} is not served here (known: {', '.join(control_names())})",
                           "model_not_found", "model")
        if body.get("stream"):
            raise APIError(400, "the controls do not stream", param="stream")
        messages = body.get("messages")
        if not isinstance(messages, list) or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages
        ):
            raise APIError(400, "messages: a list of {role, content} objects with string content is required",
                           param="messages")
        reply = control_reply(model.removeprefix(CONTROL_PREFIX), messages, pool)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }

    return app
