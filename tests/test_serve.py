"""A live server on 127.0.0.1 with tiny random students (decoder-only and encoder-decoder),
driven by the real openai client and LangChain's ChatOpenAI."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from openai import OpenAI
from transformers import AutoTokenizer

from convdistill.models import init_student
from convdistill.serve import BackgroundServer, ChatModel

TWO_TURNS = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hello, who are you?"},
    {"role": "assistant", "content": "A small model."},
    {"role": "user", "content": "What can you do?"},
]


@dataclass
class Live:
    server: BackgroundServer
    folder: Path
    name: str

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def prompt_tokens(self, messages: list[dict[str, str]]) -> int:
        """What the server should count, computed independently from the saved tokenizer."""
        tokenizer = AutoTokenizer.from_pretrained(self.folder)
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])


@pytest.fixture(scope="module", params=["llama", "t5"])
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    family = request.param
    folder = init_student(family, "tiny", tmp_path_factory.mktemp("m") / family).path
    with BackgroundServer(ChatModel(folder, f"tiny-{family}")) as running:
        yield Live(running, folder, f"tiny-{family}")


@pytest.fixture
def client(live: Live) -> OpenAI:
    return OpenAI(base_url=live.base_url, api_key="unused", max_retries=0, timeout=60)


def test_plain_completion_has_openai_shape_and_usage(live: Live, client: OpenAI) -> None:
    reply = client.chat.completions.create(
        model="anything", messages=TWO_TURNS, max_tokens=8, temperature=1.0, seed=1
    )
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")
    assert reply.model == live.name  # the model field never switches models
    (choice,) = reply.choices
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens == live.prompt_tokens(TWO_TURNS)
    assert 1 <= reply.usage.completion_tokens <= 8
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_multi_turn_history_reaches_the_model(live: Live, client: OpenAI) -> None:
    first = client.chat.completions.create(model="m", messages=TWO_TURNS[:2], max_tokens=4, seed=3)
    second = client.chat.completions.create(model="m", messages=TWO_TURNS, max_tokens=4, seed=3)
    assert first.usage.prompt_tokens == live.prompt_tokens(TWO_TURNS[:2])
    assert second.usage.prompt_tokens == live.prompt_tokens(TWO_TURNS)
    assert second.usage.prompt_tokens > first.usage.prompt_tokens


def test_seed_makes_sampling_repeatable_and_streaming_matches(client: OpenAI) -> None:
    ask = dict(model="m", messages=TWO_TURNS, max_tokens=12, temperature=0.9, top_p=0.95, seed=42)
    once = client.chat.completions.create(**ask).choices[0].message.content
    twice = client.chat.completions.create(**ask).choices[0].message.content
    assert once == twice and once
    chunks = list(client.chat.completions.create(**ask, stream=True))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == once
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    other = client.chat.completions.create(**{**ask, "seed": 43}).choices[0].message.content
    assert other != once


def test_stream_reports_usage_when_asked(live: Live, client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model="m", messages=TWO_TURNS, max_tokens=5, seed=2, stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert usage.prompt_tokens == live.prompt_tokens(TWO_TURNS)
    assert 1 <= usage.completion_tokens <= 5


def test_n_choices_each_seeded_apart(client: OpenAI) -> None:
    reply = client.chat.completions.create(
        model="m", messages=TWO_TURNS, max_tokens=6, n=3, seed=7, temperature=1.0
    )
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert len({c.message.content for c in reply.choices}) > 1
    assert reply.usage.completion_tokens <= 18
    stream = client.chat.completions.create(
        model="m", messages=TWO_TURNS, max_tokens=6, n=3, seed=7, temperature=1.0, stream=True
    )
    texts = ["", "", ""]
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert texts == [c.message.content for c in reply.choices]


def test_stop_string_cuts_the_reply_in_both_modes(client: OpenAI) -> None:
    ask = dict(model="m", messages=TWO_TURNS, max_tokens=24, temperature=1.0, seed=11)
    full = client.chat.completions.create(**ask).choices[0].message.content
    assert len(full) > 12
    stop = full[6:9]
    cut = full[: full.find(stop)]
    reply = client.chat.completions.create(**ask, stop=[stop])
    assert reply.choices[0].message.content == cut
    assert reply.choices[0].finish_reason == "stop"
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(**ask, stop=stop, stream=True)
        if c.choices
    )
    assert streamed == cut


def test_greedy_ignores_seed(client: OpenAI) -> None:
    ask = dict(model="m", messages=TWO_TURNS, max_tokens=6, temperature=0)
    replies = [client.chat.completions.create(**ask, seed=s) for s in (1, 2)]
    texts = {r.choices[0].message.content for r in replies}
    assert len(texts) == 1


def test_models_and_health(live: Live, client: OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == [live.name]
    assert client.models.retrieve(live.name).id == live.name
    health = httpx.get(live.base_url.removesuffix("/v1") + "/health").json()
    assert health["status"] == "ok" and health["model"] == live.name


def test_langchain_chat_openai_multi_turn_and_stream(live: Live) -> None:
    llm = ChatOpenAI(base_url=live.base_url, api_key="unused", model=live.name, max_tokens=6,
                     temperature=0.7, seed=5, max_retries=0)
    history = [SystemMessage("You are terse."), HumanMessage("Hello, who are you?"),
               AIMessage("A small model."), HumanMessage("What can you do?")]
    answer = llm.invoke(history)
    assert isinstance(answer.content, str)
    assert answer.response_metadata["finish_reason"] in ("stop", "length")
    assert answer.usage_metadata["input_tokens"] == live.prompt_tokens(TWO_TURNS)
    streamed = "".join(chunk.content for chunk in llm.stream(history))
    assert streamed == answer.content
