"""Per-token log-probabilities from full logits, answering TRL's `fused_lm_head=True` calls.

TRL 1.16 computes SFT and DPO losses through a "fused LM head" (tiled projection, no full
logits). On CUDA it runs Triton kernels, scores only labelled positions and saves memory; on the
CPU it scores every position in tiles and measured 2-4x slower than a plain projection and
softmax for the small models trained here (docs/trainers.md). And it cannot run an
encoder-decoder model at all. `add_causal_logits_head` (causal models off CUDA) and
`add_seq2seq_logits_head` (encoder-decoder models everywhere) install a forward that answers the
same calls with the same FusedCausalLMOutput fields from ordinary logits of the labelled
positions only. TRL's losses and metrics then run unchanged on top of it.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import torch
from trl.trainer.utils import FusedCausalLMOutput

from convdistill.trainers.projection import position_logits
from convdistill.trainers.tokenize import IGNORE


def base_model(model: Any) -> Any:
    """The model itself, under a PEFT (LoRA) wrapper if there is one: where a head is installed."""
    from accelerate.utils import is_peft_model

    return model.get_base_model() if is_peft_model(model) else model


def prefer_logits_head(device: torch.device) -> bool:
    """Plain logits beat TRL's tiled head everywhere but on CUDA (Triton)."""
    return device.type != "cuda"


def token_loss(logits: torch.Tensor, labels: torch.Tensor, num_items: Any = None) -> torch.Tensor:
    """Cross-entropy summed over labelled tokens, divided by the accumulated batch's label count
    when known (so gradient accumulation weighs every token alike), else this batch's."""
    loss = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE, reduction="sum"
    )
    count = (labels != IGNORE).sum() if num_items is None else num_items
    return loss / torch.as_tensor(count, device=loss.device).clamp(min=1)


def _scored(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
            ) -> FusedCausalLMOutput:
    """TRL's per-token fields from the logits of the labelled positions only (`mask`)."""
    logits = logits.float()
    log_softmax = logits.log_softmax(-1)
    log_probs = log_softmax.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():
        entropy = -(log_softmax.exp() * log_softmax).sum(-1)
        mean_logits = logits.mean(-1)
        is_top1 = logits.argmax(-1) == targets

    def spread(values: torch.Tensor) -> torch.Tensor:
        # masked_scatter keeps the graph even when nothing is labelled (a zero loss, not a crash)
        return values.new_zeros(mask.shape).masked_scatter(mask, values)

    log_probs = spread(log_probs)
    loss = -log_probs.sum() / mask.sum().clamp(min=1)
    return FusedCausalLMOutput(loss=loss, log_probs=log_probs, entropy=spread(entropy),
                               mean_logits=spread(mean_logits), is_top1=spread(is_top1),
                               label_mask=mask)


LabelledLogits = Callable[[Any, Callable[..., Any], tuple[Any, ...], dict[str, Any], torch.Tensor], torch.Tensor]


def _install_head(model: Any, labelled_logits: LabelledLogits) -> None:
    """Wrap `model.forward` so that fused-head calls are answered by `labelled_logits(model,
    original_forward, args, kwargs, mask)`: the logits of the positions `mask` selects among
    the shifted labels, in order."""
    original = model.forward

    def forward(self: Any, *args: Any, fused_lm_head: bool = False, labels: Any = None,
                **kwargs: Any) -> Any:
        if not fused_lm_head:
            if labels is not None:
                kwargs["labels"] = labels
            return original(*args, **kwargs)
        for key in ("shift_labels", "num_items_in_batch", "use_cache"):
            kwargs.pop(key, None)
        targets = labels[:, 1:]
        mask = targets != IGNORE
        return _scored(labelled_logits(self, original, args, kwargs, mask), targets[mask], mask)

    model.forward = types.MethodType(forward, model)


def _causal_labelled(model: Any, original: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                     mask: torch.Tensor) -> torch.Tensor:
    # The labelled positions only go through the vocabulary projection (projection.py says why).
    kwargs.pop("encoder_input_ids", None)
    kwargs.pop("encoder_attention_mask", None)
    _, logits_at = position_logits(model, *args, project=True, use_cache=False, **kwargs)
    return logits_at(mask.nonzero(as_tuple=True))


def _seq2seq_labelled(model: Any, original: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                      mask: torch.Tensor) -> torch.Tensor:
    # PEFT's seq2seq wrapper passes these explicitly, as None.
    for key in ("decoder_input_ids", "decoder_attention_mask", "decoder_inputs_embeds"):
        kwargs.pop(key, None)
    encoder_ids = kwargs.pop("encoder_input_ids", None)
    encoder_mask = kwargs.pop("encoder_attention_mask", None)
    decoder_ids = kwargs.pop("input_ids")
    decoder_mask = kwargs.pop("attention_mask", None)
    return original(
        input_ids=encoder_ids,
        attention_mask=encoder_mask,
        decoder_input_ids=decoder_ids[:, :-1],
        decoder_attention_mask=None if decoder_mask is None else decoder_mask[:, :-1],
        use_cache=False,
        **kwargs,
    ).logits[mask]


def add_causal_logits_head(model: Any) -> None:
    """Make a decoder-only model's `model(..., labels=..., fused_lm_head=True)` return a
    FusedCausalLMOutput whose per-token fields have shape (batch, seq_len - 1), aligned with the
    shifted labels, as TRL's SFT and DPO losses slice them. Install it after TRL's own patch (it
    wraps TRL's)."""
    _install_head(model, _causal_labelled)


def add_seq2seq_logits_head(model: Any) -> None:
    """The same for an encoder-decoder model: `input_ids` / `attention_mask` hold the decoder
    sequence (start token first) and `encoder_input_ids` / `encoder_attention_mask` the prompt."""
    _install_head(model, _seq2seq_labelled)
