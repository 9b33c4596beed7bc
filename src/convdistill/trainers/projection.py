"""Logits at chosen positions only: the LM head applied to the hidden states that are read.

In multi-turn chats the prompts and user turns are a large share of the tokens, and for the
small models trained and served here the vocabulary projection (and the softmax after it)
dominates a forward pass. Training (labelled tokens), teacher scoring (target positions) and
the server (prompt log-probabilities) therefore run the model's decoder stack once and project
only the positions they read, whenever the head is a plain projection of the last hidden state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

# Config fields by which a model's logits are more than `lm_head(hidden)`; a projection of
# hidden states alone would get them wrong.
_SCALED_LOGITS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier",
                  "logits_scaling")


def supports_logits_head(model: Any) -> bool:
    """Plain `lm_head(hidden)` models only: TRL's fused head (and the model's own forward) also
    apply softcapping and logit scales, which a bare projection does not reproduce."""
    config = model.config.get_text_config()
    return all(getattr(config, name, None) in (None, 1.0) for name in _SCALED_LOGITS)


def projects_hidden_states(model: Any) -> bool:
    """Whether logits are a plain projection of the last hidden state (no soft-capping or
    scaling) of a decoder stack the model exposes, so only the wanted positions need projecting."""
    return supports_logits_head(model) and getattr(model, "base_model", None) is not None


def position_logits(model: Any, *args: Any, project: bool, **inputs: Any
                    ) -> tuple[Any, Callable[[Any], torch.Tensor]]:
    """Run `model` once on `args` / `inputs`; return its output and `logits_at(index)`, the logits
    at `index` of the (batch, sequence) positions (a boolean mask, a (rows, cols) pair, ...).

    `project` (callers decide it with `projects_hidden_states` or `supports_logits_head`): the
    model's decoder stack (`model.base_model`) runs and its head projects the indexed positions
    only, each time `logits_at` is called (so a caller may read in chunks). Otherwise the model
    runs whole and its full logits are indexed."""
    if project:
        out = model.base_model(*args, **inputs)
        head = model.get_output_embeddings()
        hidden = out.last_hidden_state
        return out, lambda index: head(hidden[index])
    out = model(*args, **inputs)
    return out, lambda index: out.logits[index]
