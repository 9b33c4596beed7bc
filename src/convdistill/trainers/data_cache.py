"""Tokenized training data kept on disk, so that a second run of the same recipe (another seed,
a resumed run, a sweep over learning rates) starts training without reading and tokenizing its
records again.

A split's examples are saved as an Arrow dataset (`datasets.Dataset.save_to_disk`, read back
memory-mapped) with their truncation counts, under a key over everything that decides them:
the input file's bytes, the tokenizer (vocabulary, merges, special tokens, chat template), the
model family, the trainer kind, `train_on`, `path_strategy`, the example limit and the length
limits, and this module's format number. Any change makes a new key; nothing stale is read.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from convdistill.files import fingerprint
from convdistill.trainers.truncation import TruncationStats

# Bump when the examples built from the same inputs change (tokenize.py, truncation.py).
FORMAT = 1


def file_digest(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tokenizer_digest(tokenizer: Any) -> str:
    """What makes a tokenizer split and render text as it does: its full serialisation (a fast
    tokenizer's JSON, else its vocabulary), special tokens and chat template."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    extra = json.dumps([tokenizer.chat_template, tokenizer.all_special_tokens, type(tokenizer).__name__])
    return hashlib.sha256((body + extra).encode()).hexdigest()


def cache_key(source: str | Path, settings: dict[str, Any], tokenizer_id: str) -> str:
    """The key of a split's examples: the input's bytes, the tokenizer (`tokenizer_digest`) and
    the settings that decide the examples."""
    return fingerprint({"format": FORMAT, "file": file_digest(source), "tokenizer": tokenizer_id, **settings})


class TokenizedCache:
    """One split's tokenized examples under `folder/<key>`."""

    def __init__(self, folder: str | Path, key: str):
        self.path = Path(folder) / key

    def load(self) -> tuple[Any, TruncationStats] | None:
        """The saved dataset (memory-mapped) and its counts, or None when there is none."""
        from datasets import load_from_disk

        stats_file = self.path / "stats.json"
        if not stats_file.is_file():
            return None
        stats = TruncationStats.from_dict(json.loads(stats_file.read_text()))
        return load_from_disk(str(self.path / "examples")), stats

    def save(self, dataset: Any, stats: TruncationStats) -> None:
        """Write beside the final place, then rename: a run stopped halfway leaves nothing that
        a later run would read as complete."""
        partial = self.path.with_name(f"{self.path.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        dataset.save_to_disk(str(partial / "examples"))
        (partial / "stats.json").write_text(json.dumps(stats.as_dict()))
        try:
            partial.rename(self.path)
        except OSError:  # another run saved the same key first: theirs is as good
            shutil.rmtree(partial, ignore_errors=True)
        print(f"[convdistill] tokenized data saved to {self.path} (a run with the same data, tokenizer and "
              "limits reuses it)", file=sys.stderr, flush=True)
