"""The two model families a student can be, and everything training does differently for each.

    DECODER_ONLY      a causal LM: a whole path is one sequence, loss on the replies inside it
    ENCODER_DECODER   a T5-family model: one example per reply, the conversation so far as input
    family_of(folder) which of the two a checkpoint is

Recipes and steps ask the family (`family.sft_examples(...)`, `family.sft_trainer`, ...) instead
of branching on a flag; the per-family code itself stays with the component it belongs to
(tokenize, teacher_scoring, distill_trainer, seq2seq, ...). The TRL-heavy components are
imported when a method needs them, so importing this module loads no trainer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from convdistill.trainers.teacher_scoring import TeacherView, causal_teacher_view, seq2seq_teacher_view
from convdistill.trainers.tokenize import seq2seq_examples, seq2seq_pair, tokenize_pair, tokenize_path
from convdistill.trainers.truncation import TruncationStats

Example = dict[str, list[int]]
Message = dict[str, str]


@dataclass(frozen=True)
class ModelFamily(ABC):
    """What differs between the families. `name` is how run logs and the CLI call the family;
    `lora_task_type` is PEFT's task type for its LoRA adapters; `needs_generation_markers`:
    whether the chat template must mark the replies (decoder-only training finds its loss
    tokens through them; encoder-decoder training only renders the template)."""

    name: str
    lora_task_type: str
    needs_generation_markers: bool

    @abstractmethod
    def auto_model(self) -> Any:
        """The transformers Auto class that loads a checkpoint of this family."""

    @abstractmethod
    def sft_examples(self, messages: Sequence[Message], flags: Sequence[bool], tokenizer: Any,
                     max_length: int | None, max_target_length: int | None, stats: TruncationStats
                     ) -> list[Example]:
        """The fitted, tokenized SFT examples of one path (none when it is dropped)."""

    @abstractmethod
    def pair_example(self, record: dict[str, Any], tokenizer: Any, max_length: int | None,
                     max_target_length: int | None, stats: TruncationStats) -> Example | None:
        """prompt_ids / chosen_ids / rejected_ids of one pair record, fitted, or None."""

    @abstractmethod
    def collator(self, pad_id: int, model: Any) -> Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]:
        """Batches SFT examples for `model` (distillation and held-out scoring)."""

    @abstractmethod
    def teacher_view(self, example: Example) -> TeacherView:
        """What a causal teacher reads for one SFT example, and where its targets sit."""

    @abstractmethod
    def labelled_logits(self, model: Any, inputs: dict[str, torch.Tensor], single_process: bool = True
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """The student's logits at every labelled token of a collated batch, and those tokens."""

    @abstractmethod
    def prompt_ids(self, history: Sequence[Message], tokenizer: Any) -> list[int]:
        """What the student reads before writing the reply to `history` (ending with a user turn)."""

    @abstractmethod
    def generate(self, model: Any, prompts: Sequence[Sequence[int]], pad_id: int, eos_id: int, sampling: Any
                 ) -> list[list[int]]:
        """The student's reply ids to each prompt, sampled in one batch (`rollout.Sampling`)."""

    @property
    @abstractmethod
    def sft_trainer(self) -> type:
        """The TRL SFTTrainer subclass that trains this family."""

    @property
    @abstractmethod
    def dpo_trainer(self) -> type:
        """The TRL DPOTrainer subclass that trains this family."""


@dataclass(frozen=True)
class DecoderOnly(ModelFamily):
    def auto_model(self) -> Any:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM

    def sft_examples(self, messages: Sequence[Message], flags: Sequence[bool], tokenizer: Any,
                     max_length: int | None, max_target_length: int | None, stats: TruncationStats
                     ) -> list[Example]:
        example = tokenize_path(messages, flags, tokenizer, max_length, stats)
        return [] if example is None else [example]

    def pair_example(self, record: dict[str, Any], tokenizer: Any, max_length: int | None,
                     max_target_length: int | None, stats: TruncationStats) -> Example | None:
        return tokenize_pair(record, tokenizer, max_length, stats)

    def collator(self, pad_id: int, model: Any) -> Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]:
        from convdistill.trainers.distill_trainer import CausalCollator

        return CausalCollator(pad_id)

    def teacher_view(self, example: Example) -> TeacherView:
        return causal_teacher_view(example)

    def labelled_logits(self, model: Any, inputs: dict[str, torch.Tensor], single_process: bool = True
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        from convdistill.trainers.distill_trainer import causal_labelled_logits

        return causal_labelled_logits(model, inputs, single_process)

    def prompt_ids(self, history: Sequence[Message], tokenizer: Any) -> list[int]:
        from convdistill.trainers.rollout import causal_prompt_ids

        return causal_prompt_ids(history, tokenizer)

    def generate(self, model: Any, prompts: Sequence[Sequence[int]], pad_id: int, eos_id: int, sampling: Any
                 ) -> list[list[int]]:
        from convdistill.trainers.rollout import generate_replies

        return generate_replies(model, prompts, pad_id, eos_id, sampling, left_pad=True)

    @property
    def sft_trainer(self) -> type:
        from convdistill.trainers.sft_trainer import CausalSFTTrainer

        return CausalSFTTrainer

    @property
    def dpo_trainer(self) -> type:
        from convdistill.trainers.dpo_trainer import FittedDPOTrainer

        return FittedDPOTrainer


@dataclass(frozen=True)
class EncoderDecoder(ModelFamily):
    def auto_model(self) -> Any:
        from transformers import AutoModelForSeq2SeqLM

        return AutoModelForSeq2SeqLM

    def sft_examples(self, messages: Sequence[Message], flags: Sequence[bool], tokenizer: Any,
                     max_length: int | None, max_target_length: int | None, stats: TruncationStats
                     ) -> list[Example]:
        # max_length bounds the encoder side; the replies default to the same bound
        return seq2seq_examples(messages, flags, tokenizer, max_length, max_target_length or max_length, stats)

    def pair_example(self, record: dict[str, Any], tokenizer: Any, max_length: int | None,
                     max_target_length: int | None, stats: TruncationStats) -> Example | None:
        return seq2seq_pair(record, tokenizer, max_length, stats, max_target_length)

    def collator(self, pad_id: int, model: Any) -> Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]:
        from convdistill.trainers.seq2seq import Seq2SeqCollator, decoder_start_id

        return Seq2SeqCollator(pad_id, decoder_start_id(model))

    def teacher_view(self, example: Example) -> TeacherView:
        return seq2seq_teacher_view(example)

    def labelled_logits(self, model: Any, inputs: dict[str, torch.Tensor], single_process: bool = True
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        from convdistill.trainers.distill_trainer import seq2seq_labelled_logits

        return seq2seq_labelled_logits(model, inputs)

    def prompt_ids(self, history: Sequence[Message], tokenizer: Any) -> list[int]:
        from convdistill.trainers.rollout import seq2seq_prompt_ids

        return seq2seq_prompt_ids(history, tokenizer)

    def generate(self, model: Any, prompts: Sequence[Sequence[int]], pad_id: int, eos_id: int, sampling: Any
                 ) -> list[list[int]]:
        from convdistill.trainers.rollout import generate_replies

        return generate_replies(model, prompts, pad_id, eos_id, sampling, left_pad=False)

    @property
    def sft_trainer(self) -> type:
        from convdistill.trainers.seq2seq import Seq2SeqSFTTrainer

        return Seq2SeqSFTTrainer

    @property
    def dpo_trainer(self) -> type:
        from convdistill.trainers.seq2seq import Seq2SeqDPOTrainer

        return Seq2SeqDPOTrainer


DECODER_ONLY: ModelFamily = DecoderOnly("decoder-only", "CAUSAL_LM", needs_generation_markers=True)
ENCODER_DECODER: ModelFamily = EncoderDecoder("encoder-decoder", "SEQ_2_SEQ_LM", needs_generation_markers=False)


def family_of(folder: str | Path) -> ModelFamily:
    """The family of a checkpoint folder, read from its config (the weights are not loaded)."""
    from transformers import AutoConfig

    encoder_decoder = bool(getattr(AutoConfig.from_pretrained(folder), "is_encoder_decoder", False))
    return ENCODER_DECODER if encoder_decoder else DECODER_ONLY
