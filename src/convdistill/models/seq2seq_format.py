"""The encoder-decoder prompt format: how a conversation becomes encoder input and decoder target.

One place for it, because the trainers (teacher-forced targets) and the server (generation)
must agree exactly, or a trained T5 student is served prompts it never saw.

- Encoder input: the whole dialogue so far rendered with the model's chat template (ChatML,
  the same text a decoder-only model is prompted with), ending in the generation prompt
  `<|im_start|>assistant\\n`. Too long: the oldest tokens are cut, since the last turns
  matter most for the next reply.
- Decoder target: the assistant's reply followed by the end-of-turn token `<|im_end|>`; the
  decoder starts from `config.decoder_start_token_id` (the pad token, T5's convention).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from convdistill.errors import BadInput

Message = dict[str, str]


def source_text(history: Sequence[Message], tokenizer: Any) -> str:
    """Encoder input text for the reply that follows `history` (which ends with a user turn)."""
    return tokenizer.apply_chat_template(list(history), tokenize=False, add_generation_prompt=True)


def target_text(reply: str, tokenizer: Any) -> str:
    """Decoder target text: the reply and the end-of-turn token, so the student learns to stop."""
    return reply + tokenizer.eos_token


def encode_source(
    history: Sequence[Message], tokenizer: Any, max_tokens: int | None = None
) -> list[int]:
    ids = tokenizer(source_text(history, tokenizer), add_special_tokens=False)["input_ids"]
    if max_tokens is not None and len(ids) > max_tokens:
        ids = ids[-max_tokens:]  # keep the latest turns and the generation prompt
    return ids


def encode_example(
    messages: Sequence[Message],
    tokenizer: Any,
    max_source_tokens: int | None = None,
    max_target_tokens: int | None = None,
) -> dict[str, list[int]]:
    """One training example: `messages` ends with the assistant reply to learn."""
    if not messages or messages[-1]["role"] != "assistant":
        raise BadInput("an encoder-decoder example must end with an assistant message")
    source = encode_source(messages[:-1], tokenizer, max_source_tokens)
    target = target_text(messages[-1]["content"], tokenizer)
    labels = tokenizer(target, add_special_tokens=False)["input_ids"]
    if max_target_tokens is not None:
        labels = labels[:max_target_tokens]
    return {"input_ids": source, "attention_mask": [1] * len(source), "labels": labels}


def turn_examples(
    messages: Sequence[Message],
    tokenizer: Any,
    max_source_tokens: int | None = None,
    max_target_tokens: int | None = None,
) -> Iterator[dict[str, list[int]]]:
    """One example per assistant turn of a conversation, each with all earlier turns as source:
    the encoder-decoder counterpart of a decoder-only model's assistant-only loss."""
    for index, message in enumerate(messages):
        if message["role"] == "assistant" and index > 0:
            yield encode_example(
                messages[: index + 1], tokenizer, max_source_tokens, max_target_tokens
            )
