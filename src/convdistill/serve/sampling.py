"""Choosing the next token for each row of a batch, each row with its own settings and seed.

Rows of one batch come from different requests, so temperature, top_p and the random stream
are per row: batching must not change what a seeded request gets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0  # 0: greedy
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()


def row_generator(seed: int) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def next_tokens(
    logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator]
) -> list[int]:
    """One token per row of `logits` [rows, vocab]."""
    logits = logits.float()
    chosen: list[int] = []
    for row, (p, generator) in enumerate(zip(params, generators, strict=True)):
        if p.temperature <= 0 or p.top_p <= 0:
            chosen.append(int(torch.argmax(logits[row])))
            continue
        scaled = logits[row] / p.temperature
        if not torch.isfinite(scaled.max()):  # a temperature so small (5e-324) that it overflows:
            chosen.append(int(torch.argmax(logits[row])))  # the limit of sampling is greedy
            continue
        probs = torch.softmax(scaled, dim=-1)
        if p.top_p < 1.0:
            probs = _nucleus(probs, p.top_p)
        chosen.append(int(torch.multinomial(probs, 1, generator=generator)))
    return chosen


def _nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose mass reaches top_p (at least one)."""
    sorted_probs, order = torch.sort(probs, descending=True)
    before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # mass of strictly likelier tokens
    drop = before >= top_p
    drop[0] = False  # the likeliest token stays even when top_p rounds to 0 in float32 (1e-46)
    sorted_probs[drop] = 0.0
    kept = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return kept / kept.sum()
