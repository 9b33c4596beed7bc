"""TRL's SFTTrainer for decoder-only students, on pre-tokenized, fitted paths.

The datasets hold `input_ids` and `labels` built by `tokenize.tokenize_path` (loss masks per
turn, shared truncation policy), which TRL takes as they are, packing included. One change:
off CUDA the loss comes from plain logits instead of TRL's tiled fused head (see heads.py);
on CUDA TRL's own loss runs unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from trl import SFTTrainer

from convdistill.trainers.heads import IGNORE, prefer_logits_head, token_loss


class CausalSFTTrainer(SFTTrainer):
    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        if not prefer_logits_head(self.args.device) or self.args.loss_type != "nll":
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        mode = "train" if self.model.training else "eval"
        labels = inputs.pop("labels")
        outputs = model(**inputs, use_cache=False)
        logits, targets = outputs.logits[:, :-1], labels[:, 1:]
        loss = token_loss(logits, targets, num_items_in_batch)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        with torch.no_grad():
            mask = targets != IGNORE
            correct = ((logits.argmax(-1) == targets) & mask).sum()
            total = self.accelerator.gather_for_metrics(mask.sum()).sum()
            correct = self.accelerator.gather_for_metrics(correct).sum()
            self._metrics[mode]["mean_token_accuracy"].append(
                (correct / total).item() if total > 0 else 0.0)
        if mode == "train":
            # Padding-free batches carry position_ids and no attention mask.
            if "attention_mask" in inputs:
                seen = inputs["attention_mask"].sum()
            else:
                seen = torch.tensor(inputs["input_ids"].numel())
            self._total_train_tokens += int(self.accelerator.gather_for_metrics(seen).sum())
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        return (loss, outputs) if return_outputs else loss
