"""`/v1/completions` with echo and log-probabilities, and vLLM's tokenizer endpoints, on a live
server with tiny students of both families, driven by the real openai client; the numbers are
checked against the model run directly with transformers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai import OpenAI
from transformers import AutoModelForCausalLM, AutoTokenizer

from convdistill.models import init_student
from convdistill.serve import BackgroundServer, ChatModel, Limits, ServeSettings
from test_serve_fuzz import check, encode, json_values

LIMITS = Limits(max_prompt_tokens=2040, max_tokens=32, default_max_tokens=16, max_n=4, max_pending=32)  # context 2048
PROMPTS = ["The capital of France is", "Once upon a time, in a land far away, there lived a small",
           "1, 2, 3,"]


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_student("llama", "tiny", tmp_path_factory.mktemp("m") / "llama").path


@pytest.fixture(scope="module")
def url(llama: Path) -> Iterator[str]:
    with BackgroundServer(ChatModel(llama, "tiny-llama"), ServeSettings(limits=LIMITS)) as running:
        yield running.base_url


@pytest.fixture(scope="module")
def client(url: str) -> OpenAI:
    return OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def reference(llama: Path) -> tuple[Any, Any]:
    tokenizer = AutoTokenizer.from_pretrained(llama)
    return tokenizer, AutoModelForCausalLM.from_pretrained(llama, dtype=torch.float32).eval()


@torch.inference_mode()
def prompt_log_probs(reference: tuple[Any, Any], ids: list[int]) -> tuple[list[float], list[list[int]]]:
    """Each prompt token's log-probability (from the second on) and the top-3 ids before it."""
    _, model = reference
    log_probs = model(torch.tensor([ids])).logits[0, :-1].float().log_softmax(-1)
    chosen = log_probs.gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]
    return chosen.tolist(), log_probs.topk(3, -1).indices.tolist()


def post(url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{url}/completions", json=body, timeout=60)


def test_echo_logprobs_match_the_model_and_carry_the_generated_token(client: OpenAI, reference):
    tokenizer, _ = reference
    done = client.completions.create(model="m", prompt=PROMPTS[0], max_tokens=3, temperature=0, echo=True,
                                     logprobs=3)
    assert done.object == "text_completion" and done.model == "tiny-llama"
    choice = done.choices[0]
    ids = tokenizer(PROMPTS[0])["input_ids"]
    assert choice.text.startswith(PROMPTS[0]) and choice.finish_reason == "length"
    assert done.usage.prompt_tokens == len(ids) and done.usage.completion_tokens == 3
    logprobs = choice.logprobs
    assert len(logprobs.tokens) == len(ids) + 3 == len(logprobs.token_logprobs) == len(logprobs.text_offset)
    assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
    expected, top_ids = prompt_log_probs(reference, ids)
    assert logprobs.token_logprobs[1: len(ids)] == pytest.approx(expected, abs=1e-4)
    for position, top in enumerate(logprobs.top_logprobs[1:len(ids)]):
        best = [tokenizer.decode([i]) for i in top_ids[position]]
        assert list(top)[:3] == best  # the likeliest first
    generated = logprobs.top_logprobs[len(ids):]
    assert all(max(top.values()) == value for top, value in zip(generated, logprobs.token_logprobs[len(ids):],
                                                                 strict=True))  # greedy: the chosen is the best
    assert "".join(logprobs.tokens[len(ids):]) == choice.text[len(PROMPTS[0]):]


def test_a_batch_of_token_id_prompts_scores_each_as_alone(url: str, reference):
    tokenizer, _ = reference
    batch = [tokenizer(p)["input_ids"] for p in PROMPTS]
    body = {"prompt": batch, "max_tokens": 0, "echo": True, "logprobs": 2, "return_tokens_as_token_ids": True}
    together = post(url, body)
    assert together.status_code == 200, together.text
    choices = together.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2] and all(c["finish_reason"] == "length" for c in choices)
    for ids, choice in zip(batch, choices, strict=True):
        alone = post(url, {**body, "prompt": ids}).json()["choices"][0]["logprobs"]
        logprobs = choice["logprobs"]
        assert logprobs["tokens"] == [f"token_id:{i}" for i in ids]  # max_tokens 0: the prompt only
        assert logprobs["token_logprobs"][1:] == pytest.approx(alone["token_logprobs"][1:], abs=1e-5)
        assert logprobs["token_logprobs"][1:] == pytest.approx(prompt_log_probs(reference, ids)[0], abs=1e-4)
        assert all(len(top) in (2, 3) and all(k.startswith("token_id:") for k in top)
                   for top in logprobs["top_logprobs"][1:])


def test_choices_that_share_a_question_run_its_prefix_once_and_score_as_alone(url: str, llama: Path, reference):
    """lm-eval's multiple choice: context + each choice in one batch. The shared context runs once
    (its KV cache copied to each choice's row); every log-probability, top-k and generated token
    equals the prompt scored alone, and the model run directly."""
    from convdistill.serve.chat_model import shared_prefixes

    tokenizer, _ = reference
    contexts = [tokenizer(f"Question: {q}\nAnswer:")["input_ids"]
                for q in ("Is the capital of France a large city?", "Do plants need light to grow well?")]
    choices = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in (" yes", " no, not at all", " maybe")]
    batch = [context + choice for context in contexts for choice in choices] + [tokenizer(PROMPTS[2])["input_ids"]]
    plan = shared_prefixes(batch)
    assert plan is not None and plan.groups == [[0, 1, 2], [3, 4, 5], [6]]
    assert plan.lengths[:2] == [len(contexts[0]), len(contexts[1])]
    body = {"prompt": batch, "max_tokens": 3, "temperature": 0, "echo": True, "logprobs": 3,
            "return_tokens_as_token_ids": True}
    together = post(url, body)
    assert together.status_code == 200, together.text
    for ids, choice in zip(batch, sorted(together.json()["choices"], key=lambda c: c["index"]), strict=True):
        alone = post(url, {**body, "prompt": ids}).json()["choices"][0]
        assert choice["text"] == alone["text"]  # the same greedy continuation after a shared prefill
        got, want = choice["logprobs"], alone["logprobs"]
        assert got["tokens"] == want["tokens"]
        assert got["token_logprobs"][1:] == pytest.approx(want["token_logprobs"][1:], abs=1e-4)
        assert [list(top) for top in got["top_logprobs"][1:]] == [list(top) for top in want["top_logprobs"][1:]]
        assert got["token_logprobs"][1:len(ids)] == pytest.approx(prompt_log_probs(reference, ids)[0], abs=1e-4)


def test_seeded_sampling_and_n_choices_per_prompt(url: str):
    body = {"prompt": PROMPTS[:2], "max_tokens": 5, "temperature": 1.0, "seed": 11, "n": 2}
    first, second = post(url, body).json(), post(url, body).json()
    assert [c["text"] for c in first["choices"]] == [c["text"] for c in second["choices"]]
    assert [c["index"] for c in first["choices"]] == [0, 1, 2, 3]
    assert first["choices"][0]["text"] != first["choices"][1]["text"]  # choice j: seed + j
    assert first["usage"]["completion_tokens"] == 20


BAD: dict[str, tuple[dict[str, Any], str | None]] = {
    "id past the vocabulary": ({"prompt": [1, 49152]}, "prompt"),
    "negative id": ({"prompt": [[3, 4], [-1]]}, "prompt.1"),
    "bool as id": ({"prompt": [1, True]}, "prompt"),
    "too many logprobs": ({"prompt": "hi", "logprobs": 21}, "logprobs"),
    "prompt over the limit": ({"prompt": [7] * 2041}, "prompt"),
    "prompt plus max_tokens over the context": ({"prompt": [7] * 2040, "max_tokens": 9}, "max_tokens"),
    "max_tokens over the limit": ({"prompt": "hi", "max_tokens": 33}, "max_tokens"),
    "max_tokens 0 without echo": ({"prompt": "hi", "max_tokens": 0}, None),
    "empty prompt list": ({"prompt": []}, "prompt"),
    "empty text": ({"prompt": ""}, "prompt"),
    "stream": ({"prompt": "hi", "stream": True}, None),
    "suffix": ({"prompt": "hi", "suffix": "x"}, None),
    "too many prompts": ({"prompt": ["a"] * 33}, "prompt"),
    "no prompt": ({"max_tokens": 2}, "prompt"),
    "prompt of wrong type": ({"prompt": {"text": "hi"}}, "prompt"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_completion_requests_get_a_4xx_naming_the_field(url: str, case: str):
    body, param = BAD[case]
    response = post(url, body)
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert error["message"] and (param is None or (error["param"] or "").startswith(param)), error
    assert post(url, {"prompt": "hi", "max_tokens": 1}).status_code == 200  # still serving


def test_a_default_max_tokens_shrinks_to_the_room_left_in_the_context(url: str):
    done = post(url, {"prompt": [7] * 2040, "temperature": 0})  # context 2048: room for 8, default 16
    assert done.status_code == 200, done.text
    assert done.json()["usage"]["completion_tokens"] <= 8


def test_the_openai_client_raises_its_usual_error(client: OpenAI):
    with pytest.raises(openai.BadRequestError, match="outside the vocabulary"):
        client.completions.create(model="m", prompt=[5, 10**6], max_tokens=1)


def test_tokenizer_endpoints_answer_as_vllm_and_lm_eval_detects_them(url: str, reference):
    from lm_eval.utils import RemoteTokenizer, check_remote_tokenizer_support

    tokenizer, _ = reference
    root = url.removesuffix("/v1")
    ids = httpx.post(f"{root}/tokenize", json={"prompt": PROMPTS[1], "add_special_tokens": False}).json()
    assert ids["tokens"] == tokenizer(PROMPTS[1], add_special_tokens=False)["input_ids"] and ids["count"] > 5
    text = httpx.post(f"{root}/detokenize", json={"tokens": ids["tokens"]}).json()["prompt"]
    assert text == PROMPTS[1]
    chat = httpx.post(f"{root}/tokenize", json={"messages": [{"role": "user", "content": "hi"}]}).json()
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                             add_generation_prompt=True)
    assert chat["tokens"] == tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert httpx.post(f"{root}/detokenize", json={"tokens": [-5]}).status_code == 400
    assert httpx.post(f"{root}/tokenize", json={}).status_code == 400
    assert check_remote_tokenizer_support(f"{url}/completions")
    remote = RemoteTokenizer(f"{url}/completions")
    assert remote.eos_token == tokenizer.eos_token and remote.encode("hello world") == tokenizer.encode("hello world")


def test_an_encoder_decoder_model_refuses_echo_and_completes_with_logprobs(tmp_path: Path):
    folder = init_student("t5", "tiny", tmp_path / "t5").path
    with BackgroundServer(ChatModel(folder, "tiny-t5")) as running:
        refused = post(running.base_url, {"prompt": "hi", "echo": True, "max_tokens": 0, "logprobs": 1})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "echo"
        done = post(running.base_url, {"prompt": "hi there", "max_tokens": 4, "logprobs": 2, "temperature": 0})
        assert done.status_code == 200, done.text
        logprobs = done.json()["choices"][0]["logprobs"]
        assert 1 <= len(logprobs["tokens"]) <= 4 and all(v <= 0 for v in logprobs["token_logprobs"])


# -- fuzzing: random completions bodies never get a 5xx ---------------------------------------

token_ids = st.lists(st.integers(-3, 49_160) | st.integers(-(2**70), 2**70), max_size=8)
completion_fields: dict[str, st.SearchStrategy[Any]] = {
    "model": st.text(max_size=10) | json_values,
    "prompt": st.text(max_size=40) | token_ids | st.lists(token_ids, max_size=3)
    | st.lists(st.text(max_size=10), max_size=3) | json_values,
    "max_tokens": st.integers(-2, 4) | json_values,
    "echo": st.booleans() | json_values,
    "logprobs": st.integers(-2, 25) | json_values,
    "return_tokens_as_token_ids": st.booleans() | json_values,
    "temperature": st.floats(-1, 3) | json_values,
    "top_p": st.floats(-0.5, 1.5) | json_values,
    "n": st.integers(-1, 3) | json_values,
    "stop": st.text(max_size=5) | st.lists(st.text(max_size=5), max_size=6) | json_values,
    "seed": st.integers(-(2**64), 2**64) | json_values,
    "stream": st.booleans() | json_values,
    "suffix": st.text(max_size=5) | json_values,
    "best_of": st.integers(-1, 3) | json_values,
}
valid_completion_fields: dict[str, st.SearchStrategy[Any]] = {
    "max_tokens": st.integers(0, 3),
    "echo": st.just(True),
    "logprobs": st.integers(0, 20),
    "return_tokens_as_token_ids": st.booleans(),
    "temperature": st.floats(0, 2),
    "n": st.integers(1, 2),
    "seed": st.integers(0, 2**62),
}
completion_bodies = st.one_of(
    st.fixed_dictionaries({"prompt": st.text(min_size=1, max_size=40) | st.lists(st.integers(0, 49_151),
                                                                              min_size=1, max_size=12)},
                          optional=valid_completion_fields).map(encode),
    st.fixed_dictionaries({}, optional=completion_fields).map(encode),
    json_values.map(encode),
    st.binary(max_size=200),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=completion_bodies)
def test_random_completion_bodies_never_get_a_5xx(url: str, body: bytes) -> None:
    check(httpx.post(f"{url}/completions", content=body, timeout=60))
