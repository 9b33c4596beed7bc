"""Bad, oversized and unauthorised requests against a live server: always a 4xx with an
OpenAI-style error body, never a 500, and the server keeps answering afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai import OpenAI

from convdistill.models import init_student
from convdistill.serve import BackgroundServer, ChatModel, Limits, ServeSettings

LIMITS = Limits(max_body_bytes=20_000, max_messages=8, max_chars=5_000, max_prompt_tokens=300,
                max_tokens=64, default_max_tokens=8, max_n=4, max_pending=3)
KEY = "sk-test-secret"
OK = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def with_(**fields: Any) -> dict[str, Any]:
    return {**OK, **fields}


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_student("llama", "tiny", tmp_path_factory.mktemp("m") / "llama").path


@pytest.fixture(scope="module")
def url(folder: Path) -> Iterator[str]:
    with BackgroundServer(ChatModel(folder), ServeSettings(limits=LIMITS)) as running:
        yield running.base_url


@pytest.fixture(scope="module")
def secured_url(folder: Path) -> Iterator[str]:
    with BackgroundServer(ChatModel(folder), ServeSettings(api_key=KEY)) as running:
        yield running.base_url


def post(url: str, body: bytes | dict[str, Any], **headers: str) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return httpx.post(f"{url}/chat/completions", content=content, timeout=60,
                      headers={"content-type": "application/json", **headers})


def assert_openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] in ("invalid_request_error", "rate_limit_error")
    assert set(error) == {"message", "type", "param", "code"}
    return error


MALFORMED: dict[str, bytes | dict[str, Any]] = {
    "not json": b"{",
    "empty body": b"",
    "invalid utf-8": b'{"messages": "\xff\xfe"}',
    "nan literal": b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
    "deep nesting": b"[" * 5000 + b"]" * 5000,
    "json array": [OK],
    "json string": b'"hello"',
    "json null": b"null",
    "no messages": {"max_tokens": 2},
    "empty messages": with_(messages=[]),
    "messages not a list": with_(messages="hi"),
    "message not an object": with_(messages=["hi"]),
    "missing role": with_(messages=[{"content": "hi"}]),
    "unknown role": with_(messages=[{"role": "robot", "content": "hi"}]),
    "tool role": with_(messages=[{"role": "tool", "content": "hi", "tool_call_id": "1"}]),
    "numeric content": with_(messages=[{"role": "user", "content": 5}]),
    "image content": with_(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]),
    "string temperature": with_(temperature="hot"),
    "boolean temperature": with_(temperature=True),
    "temperature too high": with_(temperature=5),
    "negative temperature": with_(temperature=-1),
    "top_p above one": with_(top_p=2),
    "zero max_tokens": with_(max_tokens=0),
    "string max_tokens": with_(max_tokens="10"),
    "float max_tokens": with_(max_tokens=2.5),
    "max_tokens over the limit": with_(max_tokens=10_000),
    "max_completion_tokens over the limit": with_(max_completion_tokens=10_000),
    "zero n": with_(n=0),
    "n over the limit": with_(n=100),
    "too many stops": with_(stop=["a", "b", "c", "d", "e"]),
    "empty stop": with_(stop=""),
    "numeric stop": with_(stop=123),
    "string stream": with_(stream="yes"),
    "string seed": with_(seed="abc"),
    "float seed": with_(seed=1.5),
    "bad stream_options": with_(stream=True, stream_options={"include_usage": "yes"}),
    "logprobs": with_(logprobs=True),
    "tools": with_(tools=[{"type": "function", "function": {"name": "f"}}]),
    "prompt over the token limit": with_(messages=user("word " * 1000)),
}

OVERSIZED: dict[str, dict[str, Any]] = {
    "body over the byte limit": with_(messages=user("x" * 30_000)),
    "too many messages": with_(messages=user("hi") * 9),
    "too many characters": with_(messages=user("y" * 3000) * 2),
}


@pytest.mark.parametrize("kind", list(MALFORMED))
def test_malformed_requests_get_400(url: str, kind: str) -> None:
    assert_openai_error(post(url, MALFORMED[kind]), 400)


@pytest.mark.parametrize("kind", list(OVERSIZED))
def test_oversized_requests_get_413(url: str, kind: str) -> None:
    assert_openai_error(post(url, OVERSIZED[kind]), 413)


def test_errors_name_the_problem(url: str) -> None:
    error = assert_openai_error(post(url, with_(temperature="hot")), 400)
    assert error["param"] == "temperature" and "temperature" in error["message"]
    error = assert_openai_error(post(url, MALFORMED["prompt over the token limit"]), 400)
    assert error["code"] == "context_length_exceeded"


def test_too_many_pending_generations_get_429(url: str) -> None:
    # max_pending is 3: one request asking for 4 choices can never be queued.
    assert_openai_error(post(url, with_(n=4)), 429)


def test_unknown_routes_and_methods_get_openai_errors(url: str) -> None:
    assert_openai_error(httpx.get(f"{url}/nothing-here"), 404)
    assert_openai_error(httpx.get(f"{url}/chat/completions"), 405)
    assert_openai_error(httpx.get(f"{url}/models/other-model"), 404)


def test_openai_client_surfaces_the_error(url: str) -> None:
    client = OpenAI(base_url=url, api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model="m", messages=user("hi"), temperature=7)


def test_server_still_answers_after_all_that(url: str) -> None:
    for body in MALFORMED.values():
        post(url, body)
    response = post(url, OK)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["role"] == "assistant"
    health = httpx.get(url.removesuffix("/v1") + "/health").json()
    assert health["status"] == "ok" and health["pending"] == 0


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Basic {KEY}", "Bearer", KEY])
def test_missing_or_wrong_key_gets_401(secured_url: str, authorization: str | None) -> None:
    headers = {"authorization": authorization} if authorization is not None else {}
    error = assert_openai_error(post(secured_url, OK, **headers), 401)
    assert error["code"] == "invalid_api_key"
    assert_openai_error(httpx.get(f"{secured_url}/models", headers=headers), 401)


def test_right_key_is_let_in_and_health_stays_open(secured_url: str) -> None:
    assert post(secured_url, OK, authorization=f"Bearer {KEY}").status_code == 200
    assert httpx.get(secured_url.removesuffix("/v1") + "/health").status_code == 200
    with pytest.raises(openai.AuthenticationError):
        OpenAI(base_url=secured_url, api_key="nope", max_retries=0).models.list()
    client = OpenAI(base_url=secured_url, api_key=KEY, max_retries=0)
    assert client.chat.completions.create(model="m", messages=user("hi"), max_tokens=2).choices


def test_a_chat_template_that_refuses_the_messages_gives_400(tmp_path: Path) -> None:
    """Some checkpoints' templates raise on e.g. two user turns in a row: the client's fault."""
    from transformers import AutoTokenizer

    folder = init_student("llama", "tiny", tmp_path / "strict").path
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = (
        "{% for m in messages %}{% if loop.index0 > 0 and m['role'] == messages[loop.index0 - 1]"
        "['role'] %}{{ raise_exception('roles must alternate') }}{% endif %}"
        "{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}assistant: "
    )
    tokenizer.save_pretrained(folder)
    with BackgroundServer(ChatModel(folder)) as running:
        error = assert_openai_error(post(running.base_url, with_(messages=user("a") * 2)), 400)
        assert "roles must alternate" in error["message"]
        assert post(running.base_url, OK).status_code == 200
