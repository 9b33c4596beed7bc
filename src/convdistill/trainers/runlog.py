"""The run log: what truncation did to the data and what training did, beside the checkpoint.

Printed once before training (one line per dataset) and written to `<output_dir>/run_log.json`
with the trainer's log history, so "how many examples were cut or dropped, and which fraction
of the assistant tokens was trained" is never a guess.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from convdistill.trainers.truncation import TruncationStats

logger = logging.getLogger("convdistill.trainers")


def announce(name: str, stats: TruncationStats) -> None:
    line = f"[convdistill] {name} data: {stats.summary()}"
    logger.info(line)
    print(line, file=sys.stderr, flush=True)


class RunLog(TrainerCallback):
    """Adds the data counts to the trainer's first log entry and times the run."""

    def __init__(self, datasets: dict[str, TruncationStats]):
        self.datasets = datasets
        self.started = time.monotonic()
        self.logged = False

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None,
               **kwargs: Any) -> None:
        if logs is not None and not self.logged and "train" in self.datasets:
            stats = self.datasets["train"]
            logs["data/truncated"] = stats.truncated
            logs["data/dropped"] = stats.dropped
            logs["data/trained_fraction"] = round(stats.trained_fraction, 4)
            self.logged = True

    def write(self, output_dir: str | Path, state: Any, extra: dict[str, Any]) -> Path:
        path = Path(output_dir) / "run_log.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "data": {name: stats.as_dict() for name, stats in self.datasets.items()},
            "seconds": round(time.monotonic() - self.started, 1),
            "global_step": state.global_step,
            "log_history": state.log_history,
            **extra,
        }
        path.write_text(json.dumps(record, indent=2, default=str) + "\n")
        return path
