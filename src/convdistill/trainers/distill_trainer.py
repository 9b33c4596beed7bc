"""Off-policy token-level distillation on TRL's SFTTrainer, for both student families.

Each example's labelled tokens (every trained assistant reply) carry two losses: cross-entropy
against the reply, and a divergence (`kd_loss.kd_token_loss`) against the teacher's top-k
distribution at the same position. The teacher's targets come from the on-disk logit cache
(`teacher_top_ids` / `teacher_top_log_probs` rows, in the order of the labelled tokens), or,
with `kd_cache: false`, from the teacher run live on the batch. TRL's trainer keeps the rest:
configs, optimisation, PEFT wrapping, callbacks, logging, checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from trl import SFTTrainer

from convdistill.errors import BadRecipe
from convdistill.padding import pad_right, pad_with_mask
from convdistill.precision import training_autocast
from convdistill.trainers.batching import TokenBudgetMixin
from convdistill.trainers.heads import base_model
from convdistill.trainers.kd_config import DistillConfig
from convdistill.trainers.kd_loss import kd_token_loss, teacher_topk
from convdistill.trainers.logit_cache import LogitCache
from convdistill.trainers.projection import position_logits, supports_logits_head
from convdistill.trainers.recipe import set_derived
from convdistill.trainers.teacher_scoring import TeacherView, teacher_logits_at
from convdistill.trainers.tokenize import IGNORE

if TYPE_CHECKING:  # family.py builds on this module
    from convdistill.trainers.family import ModelFamily


@dataclass
class CausalCollator:
    """Right-padded input_ids / attention_mask / labels of whole paths (no packing: each
    example's labelled tokens must stay in order to meet its cached teacher rows)."""

    pad_token_id: int

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        input_ids, attention_mask = pad_with_mask([e["input_ids"] for e in examples], self.pad_token_id)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": pad_right([e["labels"] for e in examples], IGNORE),
        }


@dataclass
class DistillCollator:
    """The student batch, plus the teacher's targets for its labelled tokens: cached rows, or
    (live) the teacher's input sequences and the (row, position) pairs to read."""

    student: Any
    teacher_view: Callable[[dict[str, Any]], TeacherView]
    cache: LogitCache | None
    teacher_pad_id: int

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.student(examples)
        if self.cache is not None:
            rows = [self.cache.rows(int(e["kd_index"])) for e in examples]
            batch["teacher_top_ids"] = torch.cat([ids for ids, _ in rows])
            batch["teacher_top_log_probs"] = torch.cat([values for _, values in rows])
            return batch
        views = [self.teacher_view(e) for e in examples]
        ids, mask = pad_with_mask([v.input_ids for v in views], self.teacher_pad_id)
        batch["teacher_input_ids"], batch["teacher_attention_mask"] = ids, mask
        batch["teacher_rows"] = torch.tensor([r for r, v in enumerate(views) for _ in v.positions], dtype=torch.long)
        batch["teacher_cols"] = torch.tensor([p for v in views for p in v.positions], dtype=torch.long)
        return batch


def causal_labelled_logits(model: Any, inputs: dict[str, torch.Tensor], single_process: bool = True
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """A decoder-only student's logits at every labelled token, in order, and the tokens: (N, V), (N,)."""
    labels = inputs["labels"]
    targets = labels[:, 1:]
    mask = targets != IGNORE
    inner = base_model(model)
    # Only the labelled positions are projected where the head allows it; under DDP the wrapped
    # model must be called itself, so that gradients are synchronised.
    project = single_process and supports_logits_head(inner)
    _, logits_at = position_logits(inner if project else model, input_ids=inputs["input_ids"],
                                   attention_mask=inputs["attention_mask"], use_cache=False, project=project)
    return logits_at(mask.nonzero(as_tuple=True)), targets[mask]


def seq2seq_labelled_logits(model: Any, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """An encoder-decoder student's logits at every labelled reply token, in order, and the tokens."""
    labels = inputs["labels"]
    out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                decoder_input_ids=inputs["decoder_input_ids"],
                decoder_attention_mask=inputs["decoder_attention_mask"], use_cache=False)
    mask = labels != IGNORE
    return out.logits[mask], labels[mask]


TEACHER_KEYS = ("teacher_top_ids", "teacher_top_log_probs", "teacher_input_ids", "teacher_attention_mask",
                "teacher_rows", "teacher_cols")


class TokenDistillTrainer(TokenBudgetMixin, SFTTrainer):
    """SFTTrainer whose loss is kd_weight * KD + (1 - kd_weight) * CE over the labelled tokens;
    `args` is a kd_config.DistillConfig (TRL's SFTConfig and the kd fields).

    `teacher` is the live teacher model (kd_cache: false) or None (targets come cached in the
    batch). `vocab_size` is the number of logit columns both models share. `data_collator`:
    a subclass that builds its batches itself (with the teacher's targets in them) passes its own."""

    def __init__(self, model: Any, args: Any, train_dataset: Any, processing_class: Any, *,
                 family: ModelFamily, cache: LogitCache | None, teacher: Any, teacher_pad_id: int,
                 vocab_size: int, data_collator: Any = None, **kwargs: Any) -> None:
        if args.packing or args.padding_free:
            raise BadRecipe("packing / padding_free: not supported by train distill (each example's tokens must "
                            "meet its teacher targets in order); use train_sampling_strategy: group_by_length")
        set_derived(args, "dataset_kwargs", {**(args.dataset_kwargs or {}), "skip_prepare_dataset": True},
                    "examples arrive tokenized and fitted")
        if data_collator is None:
            if cache is None and teacher is None:
                raise ValueError("distillation needs a logit cache or a live teacher")
            data_collator = DistillCollator(family.collator(processing_class.pad_token_id, model), family.teacher_view,
                                            cache, teacher_pad_id)
        super().__init__(model=model, args=args, data_collator=data_collator, train_dataset=train_dataset,
                         processing_class=processing_class, **kwargs)
        self.family = family
        self.kd: DistillConfig = args  # self.args, typed with the kd fields
        self.vocab_size = vocab_size
        self.teacher = teacher
        if teacher is not None:
            self.teacher = teacher.to(self.args.device).eval()
            self.teacher.requires_grad_(False)

    def _set_signature_columns_if_needed(self) -> None:
        if self._signature_columns is None:
            self._signature_columns = ["input_ids", "labels", "kd_index"]  # type: ignore[assignment]  # declared None in the base

    def labelled_logits(self, model: Any, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.family.labelled_logits(model, inputs, self.accelerator.num_processes == 1)

    def teacher_targets(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if "teacher_top_ids" in inputs:
            return inputs["teacher_top_ids"], inputs["teacher_top_log_probs"]
        logits = teacher_logits_at(self.teacher, inputs["teacher_input_ids"], inputs["teacher_attention_mask"],
                                   inputs["teacher_rows"], inputs["teacher_cols"])
        return teacher_topk(logits[:, : self.vocab_size], self.kd.kd_top_k, self.kd.kd_temperature)

    def mix(self, kd: torch.Tensor, ce: torch.Tensor) -> torch.Tensor:
        """The batch's summed loss from its per-token divergences and cross-entropies."""
        weight = self.kd.kd_weight
        return weight * kd.sum() + (1 - weight) * ce.sum()

    def autocast_smart_context_manager(self, cache_enabled: bool | None = True) -> Any:
        # the loss runs the decoder stack and the head apart (and the live teacher): bf16 there too
        return training_autocast(self.args)

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        mode = "train" if model.training else "eval"
        teacher_inputs = {key: inputs.pop(key) for key in TEACHER_KEYS if key in inputs}
        logits, targets = self.labelled_logits(model, inputs)
        logits = logits[:, : self.vocab_size].float()
        top_ids, top_log_probs = self.teacher_targets(teacher_inputs)
        if top_ids.shape[0] != targets.shape[0]:
            raise RuntimeError(f"teacher targets for {top_ids.shape[0]} tokens, student has {targets.shape[0]} "
                               "labelled tokens: the logit cache does not belong to this data")
        # One logsumexp serves the cross-entropy and (at temperature 1) the distillation loss.
        lse = logits.logsumexp(-1)
        ce = lse - logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        kd = kd_token_loss(logits, top_ids.to(logits.device), top_log_probs.to(logits.device), self.kd.kd_loss,
                           self.kd.kd_temperature, self.kd.kd_jsd_beta,
                           student_lse=lse if self.kd.kd_temperature == 1.0 else None)
        count = targets.numel() if num_items_in_batch is None else num_items_in_batch
        count = torch.as_tensor(count, device=logits.device).clamp(min=1)
        loss = self.mix(kd, ce) / count
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        n = max(targets.numel(), 1)
        self._metrics[mode]["kd_loss"].append(kd.detach().sum().item() / n)
        self._metrics[mode]["ce_loss"].append(ce.detach().sum().item() / n)
        if mode == "train":
            tokens = inputs["attention_mask"].sum() + inputs.get("decoder_attention_mask", torch.zeros(())).sum()
            self._total_train_tokens += int(self.accelerator.gather_for_metrics(tokens).sum())
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        return (loss, None) if return_outputs else loss
