"""One pass of a causal model over a user's calibration conversations, for the measurements
that choose what a student keeps of its teacher (block influence, channel and head importance).

Conversations are rendered with the model's chat template and fed one at a time, so no padding
weighs in; the caller's forward hooks do the measuring."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from convdistill.errors import BadInput


@torch.no_grad()
def run_calibration(model: Any, tokenizer: Any, conversations: Sequence[Sequence[dict[str, str]]],
                    max_tokens: int = 384) -> int:
    """Run the decoder stack of `model` over every conversation (cut to `max_tokens`); the
    number of tokens seen. Raises BadInput when the sample has no tokens at all."""
    model.eval()
    tokens = 0
    for messages in conversations:
        text = tokenizer.apply_chat_template(list(messages), tokenize=False)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][:, :max_tokens]
        model.model(input_ids=ids, use_cache=False)
        tokens += ids.shape[1]
    if tokens == 0:
        raise BadInput("the calibration sample has no tokens")
    return tokens
