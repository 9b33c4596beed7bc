"""Token-budget batches: each training batch holds as many examples as fit `batch_tokens`
padded tokens, instead of a fixed number of rows.

Multi-turn examples range from a one-line question to a long conversation. With a fixed row
count, a batch is padded to its longest example, and short batches leave the cores idle while
long ones run out of memory. Here the examples are sorted by length once and cut into batches
of at most `batch_tokens` padded tokens (`padding.batches_by_length`): short examples travel
many to a batch, long ones few. The batches stay the same every epoch (so the number of steps
per epoch is fixed, as the Trainer's schedule needs); their order is shuffled anew each epoch
from the run's seed. An example longer than the budget makes a batch of its own.

Each batch's loss is the usual mean over its labelled tokens, so a batch gives the same loss on
the same tokens as a plain batch of the same examples; only which examples share a step changes.
Decoder-only students can instead pack (`packing: true`), which removes padding altogether.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from transformers.trainer_pt_utils import BatchRebalanceSampler

from convdistill.padding import batches_by_length


# `BatchRebalanceSampler` is the class transformers' Trainer hands to its DataLoader as a batch
# sampler (and does not shard again per process): subclassing it is what makes the Trainer take
# whole batches from here.
class TokenBudgetSampler(BatchRebalanceSampler):
    """Batches of example indices under a padded-token budget, fixed across epochs and shuffled
    per epoch; with several processes, each takes every `world`-th batch (the same count each,
    a remainder of at most `world - 1` batches is left out of the epoch)."""

    def __init__(self, lengths: Sequence[int], batch_tokens: int, seed: int = 0, world: int = 1,
                 rank: int = 0) -> None:
        if batch_tokens < 1:
            raise ValueError(f"batch_tokens must be positive, got {batch_tokens}")
        self.lengths = list(lengths)
        self.batch_tokens = batch_tokens
        self.seed = seed
        self.world = max(1, world)
        self.rank = rank
        self.epoch = 0
        self.batches = batches_by_length(self.lengths, batch_tokens)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.batches) // self.world

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.batches), generator=generator).tolist()
        mine = order[self.rank::self.world][: len(self)]
        for b in mine:
            yield list(self.batches[b])


class TokenBudgetMixin:
    """For a transformers Trainer subclass, before it in the bases: with `batch_tokens` given,
    training batches come from a TokenBudgetSampler over the train dataset
    (per_device_train_batch_size is then unused)."""

    def __init__(self, *args: Any, batch_tokens: int | None = None, **kwargs: Any) -> None:
        self.batch_tokens = batch_tokens
        super().__init__(*args, **kwargs)

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        if self.batch_tokens is None:
            return super()._get_train_sampler(train_dataset)  # type: ignore[misc]
        dataset = train_dataset if train_dataset is not None else self.train_dataset  # type: ignore[attr-defined]
        args = self.args  # type: ignore[attr-defined]
        # an encoder-decoder example pads its source (encoder) and its reply (decoder) alike
        both = bool(getattr(self.model.config, "is_encoder_decoder", False))  # type: ignore[attr-defined]
        lengths = [len(e["input_ids"]) + (len(e["labels"]) if both else 0) for e in dataset]
        return TokenBudgetSampler(lengths, self.batch_tokens, seed=args.seed,
                                  world=args.world_size, rank=args.process_index)
