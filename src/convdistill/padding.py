"""Right-padding token rows into tensors, and grouping rows of similar length into batches: the
trainers' collators, the teacher's scoring batches and the eval backend's reference scoring all
pad the same way."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def pad_right(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    """One long tensor of the rows, each filled with `value` up to the longest."""
    width = max(len(row) for row in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for index, row in enumerate(rows):
        out[index, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return out


def pad_with_mask(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`pad_right` of the rows, and the attention mask (1 on tokens, 0 on padding)."""
    return pad_right(rows, pad_id), pad_right([[1] * len(row) for row in rows], 0)


def pad_left(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows padded on the left (ids, attention mask): generated tokens then follow every prompt directly."""
    ids, mask = pad_with_mask([list(reversed(row)) for row in rows], pad_id)
    return ids.flip(1), mask.flip(1)


def batches_by_length(lengths: Sequence[int], max_batch_tokens: int, max_rows: int | None = None) -> list[list[int]]:
    """Indices of the rows sorted by length and grouped into batches of at most `max_batch_tokens`
    padded tokens (rows times the longest) and `max_rows` rows: a short row is never padded to
    a long one's length just because they came in together. A row longer than the budget makes
    a batch of one."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batches: list[list[int]] = []
    start = 0
    while start < len(order):
        end = start + 1
        while (end < len(order) and (max_rows is None or end - start < max_rows)
               and (end - start + 1) * lengths[order[end]] <= max_batch_tokens):
            end += 1
        batches.append(order[start:end])
        start = end
    return batches
