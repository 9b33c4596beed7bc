"""Encoder-decoder students on TRL: SFT and DPO trainers that subclass TRL's own.

TRL 1.16 trains causal models only: its SFT and DPO losses call the model with a "fused LM
head" that runs `model.base_model` as a decoder stack, which a T5 model is not. These
subclasses keep everything else of TRL (configs, callbacks, PEFT wrapping, logging, metrics,
the DPO losses) and change only what an encoder-decoder needs:

- SFT: examples are (conversation so far -> reply) in `seq2seq_format`; the collator builds
  encoder inputs, decoder inputs (shifted right from the decoder start token) and labels; the
  loss is token-summed cross-entropy over the labels, divided by the batch's label count.
- DPO: the encoder reads the multi-turn prompt, the decoder scores chosen and rejected. The
  collator lays the batch out the way TRL's DPO loss expects (decoder sequence in
  `input_ids` with a completion mask, chosen rows then rejected rows) and a fused-head
  forward for encoder-decoder models returns the per-token log-probabilities TRL reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from trl import SFTTrainer

from convdistill.errors import BadRecipe
from convdistill.padding import pad_right, pad_with_mask
from convdistill.trainers.batching import TokenBudgetMixin
from convdistill.trainers.dpo_trainer import FittedDPOTrainer
from convdistill.trainers.heads import add_seq2seq_logits_head, prefer_logits_head, token_loss
from convdistill.trainers.recipe import set_derived
from convdistill.trainers.tokenize import IGNORE


@dataclass
class Seq2SeqCollator:
    """Pads encoder ids and labels; decoder inputs are the labels shifted right behind the
    decoder start token (what T5 does itself when given labels, done here once per batch)."""

    pad_token_id: int
    decoder_start_token_id: int

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        sources = [e["input_ids"] for e in examples]
        targets = [e["labels"] for e in examples]
        input_ids, attention_mask = pad_with_mask(sources, self.pad_token_id)
        # the decoder reads each target shifted right behind the start token: the same lengths
        decoder_input_ids, decoder_attention_mask = pad_with_mask(
            [[self.decoder_start_token_id, *t[:-1]] for t in targets], self.pad_token_id
        )
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "decoder_input_ids": decoder_input_ids,
            "decoder_attention_mask": decoder_attention_mask,
            "labels": pad_right(targets, IGNORE),
        }


def decoder_start_id(model: Any) -> int:
    config = model.config
    start = getattr(config, "decoder_start_token_id", None)
    if start is None:
        start = config.pad_token_id
    if start is None:
        raise BadRecipe("the encoder-decoder model has neither decoder_start_token_id nor "
                        "pad_token_id in its config")
    return int(start)


class Seq2SeqSFTTrainer(TokenBudgetMixin, SFTTrainer):
    """TRL's SFTTrainer for encoder-decoder models, on pre-tokenized (source -> reply) examples
    from `tokenize.seq2seq_examples`. Packing and padding-free do not apply (the encoder is
    bidirectional); token-budget batches (`batch_tokens`) or `train_sampling_strategy:
    group_by_length` cut padding instead."""

    def __init__(self, model: Any, args: Any, train_dataset: Any, processing_class: Any,
                 **kwargs: Any) -> None:
        if args.packing or args.padding_free:
            raise BadRecipe("packing / padding_free: not supported for encoder-decoder models; "
                            "use train_sampling_strategy: group_by_length")
        # Examples are already tokenized and fitted (truncation policy): TRL's preparation would
        # cut labels to max_length, which bounds the encoder side here, not the decoder.
        set_derived(args, "dataset_kwargs", {**(args.dataset_kwargs or {}), "skip_prepare_dataset": True},
                    "examples arrive tokenized and fitted")
        pad_id = processing_class.pad_token_id
        collator = Seq2SeqCollator(pad_id, decoder_start_id(model))
        super().__init__(model=model, args=args, data_collator=collator,
                         train_dataset=train_dataset, processing_class=processing_class, **kwargs)

    def _set_signature_columns_if_needed(self) -> None:
        if self._signature_columns is None:
            self._signature_columns = ["input_ids", "labels"]  # type: ignore[assignment]  # declared None in the base

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        mode = "train" if model.training else "eval"
        labels = inputs.pop("labels")
        outputs = model(**inputs, use_cache=False)
        loss = token_loss(outputs.logits, labels, num_items_in_batch)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        if mode == "train":
            tokens = inputs["attention_mask"].sum() + inputs["decoder_attention_mask"].sum()
            self._total_train_tokens += int(self.accelerator.gather_for_metrics(tokens).sum())
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        return (loss, outputs) if return_outputs else loss


# -- DPO --------------------------------------------------------------------------------------


@dataclass
class Seq2SeqPreferenceCollator:
    """A pair batch as TRL's DPO loss reads it, for an encoder-decoder model.

    `input_ids` / `attention_mask`: decoder sequences [start, *completion], chosen rows then
    rejected rows; `completion_mask` marks the completion tokens; `encoder_input_ids` /
    `encoder_attention_mask`: the prompt, once per row."""

    pad_token_id: int
    decoder_start_token_id: int

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        prompts = [e["prompt_ids"] for e in examples] * 2
        completions = [e["chosen_ids"] for e in examples] + [e["rejected_ids"] for e in examples]
        decoder = [[self.decoder_start_token_id, *c] for c in completions]
        input_ids, attention_mask = pad_with_mask(decoder, self.pad_token_id)
        encoder_input_ids, encoder_attention_mask = pad_with_mask(prompts, self.pad_token_id)
        out = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "completion_mask": pad_right([[0] + [1] * len(c) for c in completions], 0),
            "encoder_input_ids": encoder_input_ids,
            "encoder_attention_mask": encoder_attention_mask,
        }
        for key in ("ref_chosen_logps", "ref_rejected_logps"):
            if key in examples[0]:
                out[key] = torch.tensor([e[key] for e in examples])
        return out


class Seq2SeqDPOTrainer(FittedDPOTrainer):
    """TRL's DPOTrainer for encoder-decoder models: the datasets hold prompt_ids / chosen_ids /
    rejected_ids already fitted by `tokenize.tokenize_pair`; the loss and its metrics are
    TRL's, fed by an encoder-decoder fused head."""

    logits_head = staticmethod(add_seq2seq_logits_head)

    def __init__(self, model: Any, ref_model: Any, args: Any, train_dataset: Any,
                 processing_class: Any, **kwargs: Any) -> None:
        if args.precompute_ref_log_probs:
            raise BadRecipe("precompute_ref_log_probs: not supported for encoder-decoder models")
        if args.padding_free:
            raise BadRecipe("padding_free: not supported for encoder-decoder models")
        collator = Seq2SeqPreferenceCollator(processing_class.pad_token_id,
                                             decoder_start_id(model))
        super().__init__(model=model, ref_model=ref_model, args=args, data_collator=collator,
                         train_dataset=train_dataset, processing_class=processing_class,
                         **kwargs)
        # Always: TRL's fused head cannot run an encoder-decoder model on any device.
        if not prefer_logits_head(self.args.device):  # the parent installed it off CUDA only
            self._install_logits_head()
