"""The student writing its own replies, per family: what it reads before a reply, and sampling
replies for a batch of such prompts with transformers' `generate`.

- decoder-only: the conversation so far through the chat template, ending in the generation
  prompt `<|im_start|>assistant\\n` (what `serve` prompts it with); left-padded, so that every
  row's reply starts at the same column;
- encoder-decoder: the encoder input of `seq2seq_format` (the same rendered conversation, the
  format training and serving share); right-padded, the decoder starts from its start token.

A reply's ids stop before the end-of-turn token: the chat template adds it back when the reply
becomes part of a conversation, exactly as for the data's own replies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from convdistill.models import seq2seq_format
from convdistill.padding import pad_left, pad_with_mask

Message = dict[str, str]


@dataclass(frozen=True)
class Sampling:
    """How the student samples its replies (temperature 0: greedy)."""

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0


def causal_prompt_ids(history: Sequence[Message], tokenizer: Any) -> list[int]:
    """A decoder-only student's prompt for the reply to `history` (which ends with a user turn)."""
    out = tokenizer.apply_chat_template(list(history), tokenize=True, add_generation_prompt=True, return_dict=True)
    return list(out["input_ids"])


def seq2seq_prompt_ids(history: Sequence[Message], tokenizer: Any) -> list[int]:
    """An encoder-decoder student's encoder input for the reply to `history`."""
    return seq2seq_format.encode_source(history, tokenizer)


def until_end(row: torch.Tensor, stop_ids: set[int]) -> list[int]:
    """A generated row up to (not including) its first end-of-turn or padding token."""
    out = []
    for token in row.tolist():
        if token in stop_ids:
            break
        out.append(token)
    return out


@torch.no_grad()
def generate_replies(model: Any, prompts: Sequence[Sequence[int]], pad_id: int, eos_id: int, sampling: Sampling,
                     left_pad: bool) -> list[list[int]]:
    """One reply's token ids per prompt, sampled in one batch. The model is put in eval mode for
    generation (no dropout in what the student writes) and restored after."""
    was_training = model.training
    model.eval()
    try:
        ids, mask = pad_left(prompts, pad_id) if left_pad else pad_with_mask(prompts, pad_id)
        device = next(model.parameters()).device
        greedy = sampling.temperature == 0
        out = model.generate(
            input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=sampling.max_new_tokens,
            do_sample=not greedy, temperature=None if greedy else sampling.temperature,
            top_p=None if greedy else sampling.top_p, top_k=None, eos_token_id=eos_id, pad_token_id=pad_id,
            use_cache=True)
    finally:
        model.train(was_training)
    # decoder-only: the prompt comes back in front of the reply; encoder-decoder: the start token
    replies = out[:, ids.shape[1]:] if left_pad else out[:, 1:]
    return [until_end(row, {eos_id, pad_id}) for row in replies.cpu()]
