"""The embedded SmolLM2-135M-Instruct end to end: converted checkpoint, two-turn conversations
from the openai client and LangChain. Loaded once for the module (~25 s on a first conversion,
~1 s from the cache in CONVDISTILL_HOME)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI
from openai import OpenAI

from convdistill.models import resolve_model
from convdistill.serve import BackgroundServer, load_chat_model

NAME = "smollm2-135m-instruct"
FIRST = "What is the capital of France?"
SECOND = "What language do people speak there?"


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with BackgroundServer(load_chat_model(NAME)) as running:
        yield running.base_url


def looks_like_english(text: str) -> bool:
    words = re.findall(r"[A-Za-z']+", text)
    return len(words) >= 3 and sum(map(len, words)) >= 0.7 * len(text.replace(" ", ""))


def test_the_cached_checkpoint_is_plain(url: str) -> None:
    folder = resolve_model(NAME)
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert json.loads((folder / "convdistill.json").read_text())["license"] == "Apache-2.0"
    assert (folder / "model.safetensors").stat().st_size > 400_000_000


def test_two_turns_from_the_openai_client(url: str) -> None:
    client = OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)
    messages = [{"role": "user", "content": FIRST}]
    first = client.chat.completions.create(model=NAME, messages=messages, max_tokens=40,
                                           temperature=0)
    answer = first.choices[0].message.content
    assert "Paris" in answer and looks_like_english(answer)
    assert first.choices[0].finish_reason == "stop"  # it ends its turn by itself
    messages += [{"role": "assistant", "content": answer}, {"role": "user", "content": SECOND}]
    stream = client.chat.completions.create(model=NAME, messages=messages, max_tokens=40,
                                            temperature=0, stream=True)
    second = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert "French" in second and looks_like_english(second)  # "there" resolved from turn one


def test_two_turns_from_langchain(url: str) -> None:
    llm = ChatOpenAI(base_url=url, api_key="unused", model=NAME, temperature=0, max_tokens=40,
                     max_retries=0)
    history = [HumanMessage(FIRST)]
    first = llm.invoke(history)
    assert "Paris" in first.content
    second = llm.invoke([*history, first, HumanMessage(SECOND)])
    assert "French" in second.content and looks_like_english(second.content)
