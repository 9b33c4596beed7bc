"""TRL's DPOTrainer on pairs that convdistill has already tokenized and fitted.

TRL tokenizes pairs itself and then silently drops every pair whose prompt reaches
max_length, and cuts completions at the end. Pairs made by `tokenize.tokenize_pair` are
already fitted by the shared truncation policy (oldest turns dropped first, counted), so the
only change here is to take them as they are.
"""

from __future__ import annotations

from typing import Any

from trl import DPOTrainer

from convdistill.trainers.heads import add_causal_logits_head, base_model, prefer_logits_head
from convdistill.trainers.projection import supports_logits_head


class FittedDPOTrainer(DPOTrainer):
    # the head that answers TRL's fused-head calls for this trainer's family
    logits_head = staticmethod(add_causal_logits_head)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        base = base_model(self.model)
        if prefer_logits_head(self.args.device) and supports_logits_head(base):
            self._install_logits_head()

    def _install_logits_head(self) -> None:
        """Answer TRL's fused-head calls from plain logits (policy and reference)."""
        self.logits_head(base_model(self.model))
        if self.ref_model is not None:
            self.logits_head(self.accelerator.unwrap_model(self.ref_model))

    def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any,
                         dataset_name: str) -> Any:
        if "prompt_ids" not in dataset.column_names:
            raise ValueError(f"{dataset_name} dataset: expected tokenized pairs (prompt_ids, "
                             "chosen_ids, rejected_ids) from convdistill.trainers.tokenize")
        return dataset
