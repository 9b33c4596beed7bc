"""Concurrent clients against a live batching server: every request gets exactly what it gets
alone, whatever else shares its batch."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from openai import OpenAI

from convdistill.models import init_student
from convdistill.serve import BackgroundServer, ChatModel, ServeSettings


@pytest.fixture(scope="module", params=["llama", "t5"])
def url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = init_student(request.param, "tiny", tmp_path_factory.mktemp("m") / "s").path
    settings = ServeSettings(max_batch_size=8, batch_wait_ms=20)
    with BackgroundServer(ChatModel(folder), settings) as running:
        yield running.base_url


def ask(client: OpenAI, i: int) -> str:
    """Request i: its own history length, sampling settings, seed, stop and mode."""
    messages = [{"role": "user", "content": f"Question number {i}?"}]
    if i % 3 == 0:
        messages += [{"role": "assistant", "content": "Yes."},
                     {"role": "user", "content": "Why" * i}]
    kwargs: dict[str, Any] = dict(
        model="m", messages=messages, max_tokens=3 + i % 7, seed=1000 + i,
        temperature=0.0 if i % 5 == 0 else 0.5 + (i % 4) / 4, top_p=1.0 if i % 2 else 0.9,
    )
    if i % 4 == 1:
        stream = client.chat.completions.create(**kwargs, stream=True)
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    return client.chat.completions.create(**kwargs).choices[0].message.content


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(url: str) -> None:
    client = OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)
    alone = [ask(client, i) for i in range(24)]
    health = url.removesuffix("/v1") + "/health"
    before = httpx.get(health).json()
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(lambda i: ask(client, i), range(24)))
    after = httpx.get(health).json()
    assert together == alone
    rows, batches = after["rows"] - before["rows"], after["batches"] - before["batches"]
    assert rows == 24
    assert batches < rows / 2, f"{rows} rows in {batches} batches: requests were not batched"
