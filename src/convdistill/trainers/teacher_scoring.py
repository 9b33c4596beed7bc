"""What the teacher scores for each student example, and scoring it.

The teacher always reads the student's own token sequence, so its next-token distributions line
up with the student's labels token for token:

- decoder-only student: the example's `input_ids`; the teacher's distribution at position t-1
  is the target for every labelled token t;
- encoder-decoder student: the encoder input (the conversation so far, ending in the
  generation prompt) followed by the reply tokens, i.e. the same text a decoder-only model
  reads; the distribution at len(source) - 1 + j is the target for reply token j.

Encoder-decoder examples of one path are prefixes of one another (turn 3's input contains
turn 2's), so a causal teacher scores the longest once and every shorter one is read off it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from convdistill.padding import batches_by_length, pad_with_mask
from convdistill.trainers.kd_loss import teacher_topk
from convdistill.trainers.projection import position_logits, projects_hidden_states
from convdistill.trainers.tokenize import IGNORE


@dataclass
class TeacherView:
    """One student example as the teacher sees it: a token sequence and the positions whose
    next-token distributions are the targets, in the order of the student's labelled tokens."""

    input_ids: list[int]
    positions: list[int]


def causal_teacher_view(example: dict[str, list[int]]) -> TeacherView:
    """A decoder-only student's example: its own sequence; the target of labelled token t sits at t - 1."""
    labels = example["labels"]
    return TeacherView(list(example["input_ids"]), [t - 1 for t in range(1, len(labels)) if labels[t] != IGNORE])


def seq2seq_teacher_view(example: dict[str, list[int]]) -> TeacherView:
    """An encoder-decoder student's example: source then reply; reply token j's target sits at
    len(source) - 1 + j."""
    source, target = example["input_ids"], example["labels"]
    return TeacherView(list(source) + list(target), [len(source) - 1 + j for j in range(len(target))])


@dataclass
class ScoringJob:
    """One teacher forward pass: a sequence, and the positions read off it for each of the
    examples it serves (example index -> positions)."""

    input_ids: list[int]
    readers: list[tuple[int, list[int]]]

    def all_positions(self) -> list[int]:
        return [p for _, positions in self.readers for p in positions]


def plan_jobs(views: Sequence[TeacherView]) -> list[ScoringJob]:
    """Group views into forward passes: a view whose sequence is a prefix of the next view's
    is served by the same pass (causal attention: a prefix's distributions do not depend on
    what follows)."""
    jobs: list[ScoringJob] = []
    host: ScoringJob | None = None
    host_ids: list[int] = []
    # Walk backwards so each run of nested prefixes is hosted by its longest (last) member.
    for index in range(len(views) - 1, -1, -1):
        view = views[index]
        n = len(view.input_ids)
        if host is not None and n <= len(host_ids) and host_ids[:n] == view.input_ids:
            host.readers.append((index, view.positions))
            continue
        host = ScoringJob(list(view.input_ids), [(index, view.positions)])
        host_ids = host.input_ids
        jobs.append(host)
    jobs.reverse()
    return jobs


@torch.inference_mode()
def teacher_logits_at(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """The teacher's logits at (rows[i], cols[i]) of a right-padded batch, shape (len(rows), V)."""
    _, logits_at = position_logits(model, input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                                   project=projects_hidden_states(model))
    return logits_at((rows, cols))


def length_batches(jobs: Sequence[ScoringJob], max_batch_tokens: int) -> list[list[ScoringJob]]:
    """Jobs sorted by length and grouped into batches of at most `max_batch_tokens` padded
    tokens (a longer job alone makes a batch of one)."""
    return [[jobs[i] for i in batch]
            for batch in batches_by_length([len(job.input_ids) for job in jobs], max_batch_tokens)]


def hand_out(batch: Sequence[ScoringJob], top_ids: torch.Tensor, top_log_probs: torch.Tensor,
             out: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Give each example its rows of a batch's top-k, laid out in `all_positions` order."""
    offset = 0
    for job in batch:
        for example, positions in job.readers:
            end_row = offset + len(positions)
            out[example] = (top_ids[offset:end_row], top_log_probs[offset:end_row])
            offset = end_row


def score_jobs(
    model: Any,
    jobs: Sequence[ScoringJob],
    k: int,
    temperature: float,
    pad_id: int,
    vocab_size: int,
    max_batch_tokens: int = 4096,
    on_batch: Callable[[int], None] | None = None,
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Top-k (ids, log-probs) per example index, from batches of similar-length jobs holding
    at most `max_batch_tokens` padded tokens. `on_batch(tokens)` reports progress."""
    out: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    device = next(model.parameters()).device
    for batch in length_batches(jobs, max_batch_tokens):
        ids, mask = pad_with_mask([job.input_ids for job in batch], pad_id)
        rows = torch.tensor([r for r, job in enumerate(batch) for _ in job.all_positions()], dtype=torch.long)
        cols = torch.tensor([p for job in batch for p in job.all_positions()], dtype=torch.long)
        logits = teacher_logits_at(model, ids.to(device), mask.to(device), rows.to(device), cols.to(device))
        top_ids, top_log_probs = teacher_topk(logits[:, :vocab_size], k, temperature)
        hand_out(batch, top_ids.cpu(), top_log_probs.cpu(), out)
        if on_batch is not None:
            on_batch(int(mask.sum()))
    return out
