"""Clients that hang up: a live server on 127.0.0.1 stops generating for them within one decoding
step, streamed or not, and a request abandoned while queued never starts.

The student is a tiny random Llama: sampling at temperature 1 over SmolLM2's 49,152 tokens it
practically never draws its end-of-turn token, so 1,000 tokens take several seconds here and any
reply that stops early was stopped by the server.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from openai import OpenAI

from convdistill.models import init_student
from convdistill.serve import BackgroundServer, Batcher, ChatModel, Limits, ServeSettings
from convdistill.serve.events import Delta, Event, Finished, Job
from convdistill.serve.sampling import SamplingParams

LONG = 1000  # tokens; several seconds of generation on 2 cores
HI = [{"role": "user", "content": "Tell me a long story."}]
LIMITS = Limits(max_tokens=LONG)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> ChatModel:
    return ChatModel(init_student("llama", "tiny", tmp_path_factory.mktemp("m") / "llama").path)


@pytest.fixture(scope="module")
def server(model: ChatModel) -> Iterator[BackgroundServer]:
    # one row per batch, so that a second request queues behind the first
    with BackgroundServer(model, ServeSettings(limits=LIMITS, max_batch_size=1)) as running:
        yield running


def health(server: BackgroundServer) -> dict[str, Any]:
    return httpx.get(f"http://127.0.0.1:{server.port}/health", timeout=10).json()


def wait_for(condition: Callable[[dict[str, Any]], bool], server: BackgroundServer,
             timeout: float = 10.0) -> dict[str, Any]:
    """Poll /health until `condition` holds; the state then."""
    start = time.monotonic()
    while True:
        state = health(server)
        if condition(state):
            return state
        assert time.monotonic() - start < timeout, f"still {state} after {timeout} s"
        time.sleep(0.01)


def assert_idle_for(server: BackgroundServer, seconds: float = 0.5) -> dict[str, Any]:
    """The server stays idle: nothing pending, not one more token sampled."""
    before = health(server)
    time.sleep(seconds)
    after = health(server)
    assert after["pending"] == 0 and after["tokens"] == before["tokens"], (before, after)
    return after


def send_raw(server: BackgroundServer, body: dict[str, Any]) -> socket.socket:
    """A chat request on a bare socket that will never read its answer: close() hangs up."""
    payload = orjson.dumps(body)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload
    )
    return sock


def request(stream: bool = False) -> dict[str, Any]:
    return {"messages": HI, "max_tokens": LONG, "temperature": 1.0, "seed": 0, "stream": stream}


def test_cancelled_row_stops_at_the_next_decoding_step(model: ChatModel) -> None:
    """The worker itself: a row cancelled while its batch runs samples not one more token,
    while the other row of the batch goes on to its end."""
    batcher = Batcher(model)
    params = SamplingParams(temperature=1.0, top_p=1.0, max_tokens=40, stop=[])
    prompt = model.prompt_ids(HI)
    before = model.generated_tokens
    at_cancel: list[int] = []
    finished: list[Finished] = []

    def emit_first(event: Event) -> None:
        if isinstance(event, Delta) and not at_cancel:
            at_cancel.append(model.generated_tokens)
            batcher.cancel([jobs[0]])  # from the worker thread, mid-batch
        if isinstance(event, Finished):
            finished.append(event)

    def emit_second(event: Event) -> None:
        if isinstance(event, Finished):
            finished.append(event)

    jobs = [Job(prompt, params, 1, 0, emit_first), Job(prompt, params, 2, 1, emit_second)]
    model.generate(jobs)
    assert [(f.index, f.completion_tokens) for f in finished] == [(1, 40)]
    # At row 0's k-th token row 1 had sampled k - 1 (rows advance in order within a step), so
    # 2k - 1 tokens had been sampled; after that only row 1's went on, to 40.
    k = (at_cancel[0] - before + 1) // 2
    assert model.generated_tokens - before == k + 40


def test_plain_request_stops_when_its_client_hangs_up(server: BackgroundServer) -> None:
    """A non-streamed request (httpx, giving up after a timeout, as in the issue) stops
    generating as soon as the server sees the connection close."""
    start = health(server)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.base_url}/chat/completions", json=request(), timeout=1.0)
    hung_up = time.monotonic()
    wait_for(lambda s: s["pending"] == 0, server)
    stopped_after = time.monotonic() - hung_up
    assert stopped_after < 2.0, stopped_after
    after = assert_idle_for(server)
    generated = after["tokens"] - start["tokens"]
    assert 0 < generated < LONG, generated  # it had started, and it did not run to the end
    assert after["rows"] == start["rows"] + 1


def test_streamed_request_stops_when_its_client_hangs_up(server: BackgroundServer) -> None:
    start = health(server)
    client = OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=30)
    stream = client.chat.completions.create(model="m", messages=HI, max_tokens=LONG,  # type: ignore[arg-type]
                                            temperature=1.0, seed=0, stream=True)
    pieces = 0
    for chunk in stream:
        pieces += bool(chunk.choices and chunk.choices[0].delta.content)
        if pieces == 3:
            break
    stream.close()
    hung_up = time.monotonic()
    wait_for(lambda s: s["pending"] == 0, server)
    assert time.monotonic() - hung_up < 2.0
    after = assert_idle_for(server)
    assert 3 <= after["tokens"] - start["tokens"] < LONG


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_request_abandoned_while_queued_never_starts(server: BackgroundServer, stream: bool) -> None:
    start = health(server)
    running = send_raw(server, request(stream=True))  # takes the one batch slot
    wait_for(lambda s: s["tokens"] > start["tokens"], server)
    queued = send_raw(server, request(stream=stream))
    wait_for(lambda s: s["pending"] == 2, server)  # read, tokenized, queued behind `running`
    queued.close()
    wait_for(lambda s: s["pending"] == 1, server, timeout=2.0)  # left the queue at once
    running.close()
    wait_for(lambda s: s["pending"] == 0, server, timeout=2.0)
    after = assert_idle_for(server)
    assert after["rows"] == start["rows"] + 1  # only `running` ever reached the model
    assert after["tokens"] - start["tokens"] < LONG


def test_server_answers_normally_afterwards(server: BackgroundServer) -> None:
    client = OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=60)
    reply = client.chat.completions.create(model="m", messages=HI, max_tokens=5,  # type: ignore[arg-type]
                                           temperature=1.0, seed=0)
    assert reply.choices[0].finish_reason == "length" and reply.usage is not None
    assert reply.usage.completion_tokens == 5
    assert_idle_for(server, 0.2)


def test_refused_body_is_read_so_that_urllib_sees_the_413(tmp_path: Path, model: ChatModel) -> None:
    """urllib writes the whole body before it reads: unless the server reads (and drops) a
    refused body, the client sees the connection reset under its write instead of the 413."""
    import urllib.error
    import urllib.request

    settings = ServeSettings(limits=Limits(max_body_bytes=20_000))
    body = orjson.dumps({"messages": [{"role": "user", "content": "x" * 5_000_000}]})
    with BackgroundServer(model, settings) as running:
        for _ in range(2):  # and the server is fine afterwards
            req = urllib.request.Request(f"{running.base_url}/chat/completions", data=body,
                                         headers={"Content-Type": "application/json"})
            with pytest.raises(urllib.error.HTTPError) as caught:
                urllib.request.urlopen(req, timeout=30)
            assert caught.value.code == 413
            error = orjson.loads(caught.value.read())["error"]
            assert error["code"] == "request_too_large"
