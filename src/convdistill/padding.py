"""Right-padding token rows into tensors: the trainers' collators, the teacher's scoring batches
and the eval backend's reference scoring all pad the same way."""

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
