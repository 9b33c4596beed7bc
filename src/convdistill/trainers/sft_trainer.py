"""TRL's SFTTrainer for decoder-only students, on pre-tokenized, fitted paths.

The datasets hold `input_ids` and `labels` built by `tokenize.tokenize_path` (loss masks per
turn, shared truncation policy), which TRL takes as they are, packing included. One change:
off CUDA, TRL's fused-head calls are answered by `heads.add_causal_logits_head` (plain logits of the
labelled positions), which is faster there; TRL's loss and metrics code runs unchanged.
"""

from __future__ import annotations

from typing import Any

from trl import SFTTrainer

from convdistill.trainers.batching import TokenBudgetMixin
from convdistill.trainers.heads import add_causal_logits_head, base_model, prefer_logits_head
from convdistill.trainers.projection import supports_logits_head


class CausalSFTTrainer(TokenBudgetMixin, SFTTrainer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        base = base_model(self.model)
        if prefer_logits_head(self.args.device) and supports_logits_head(base):
            add_causal_logits_head(base)
