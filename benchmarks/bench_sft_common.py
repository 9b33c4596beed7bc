"""Shared pieces of the SFT throughput benchmarks: data, timing, token counting, reporting.

Throughput is trained (loss-carrying) tokens per second of training steps, measured from the
end of the warm-up steps to the end of the run, so start-up and the first steps' allocations
do not count. Runs alternate ours / theirs over several rounds; medians are reported.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "conversation_trees" / "oasst_en_100_tree.jsonl"
IGNORE = -100


def sample_paths(work: Path) -> Path:
    out = work / "paths.jsonl"
    if not out.is_file():
        subprocess.run([sys.executable, "-m", "convdistill.cli.main", "paths", "export",
                        str(SAMPLE), "-o", str(out)], check=True, capture_output=True)
    return out


class StepClock(TrainerCallback):
    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.ends.append(time.perf_counter())


class CountingCollator:
    """Wraps a collator; records the loss-carrying tokens of each batch, as the loss sees them
    (`shifted`: causal models predict token t+1 from position t)."""

    def __init__(self, collator: Any, shifted: bool):
        self.collator = collator
        self.shifted = shifted
        self.counts: list[int] = []

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collator(examples)
        labels = batch["labels"][:, 1:] if self.shifted else batch["labels"]
        self.counts.append(int((labels != IGNORE).sum()))
        return batch


def throughput(counts: list[int], ends: list[float], warmup: int) -> float:
    """Trained tokens per second over the steps after `warmup`."""
    tokens = sum(counts[warmup + 1: len(ends)])
    return tokens / (ends[-1] - ends[warmup])


def report(results: dict[str, list[float]], baseline: str, out: Path | None) -> str:
    lines = ["| run | trained tokens/s (median) | all rounds | ratio to " + baseline + " |",
             "| --- | --- | --- | --- |"]
    base = statistics.median(results[baseline])
    for name, values in results.items():
        median = statistics.median(values)
        rounds = ", ".join(f"{v:.0f}" for v in values)
        lines.append(f"| {name} | {median:.0f} | {rounds} | {median / base:.2f}x |")
    text = "\n".join(lines)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    return text
