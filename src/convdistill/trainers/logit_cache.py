"""The teacher's top-k log-probabilities per trained token, computed once and kept on disk.

Layout of one cache (a folder named by its fingerprint, under `kd_cache_dir`):

    meta.json        fingerprint, teacher, k, temperature, examples, rows
    offsets.npy      int64 (examples + 1): example e owns rows offsets[e]:offsets[e + 1]
    token_ids.npy    int32 (rows, k): the teacher's top-k token ids per trained token
    log_probs.npy    float32 (rows, k): their log-probabilities at the cache's temperature

The arrays are memory-mapped when training, so a cache larger than memory still works and the
teacher is not loaded at all once its cache exists. The fingerprint covers the teacher's
weights (by file size and modification time), k, the temperature and every token the teacher
reads, so a cache is reused exactly when it would be recomputed identically: by several
students of the same family and data, by every epoch, and by a resumed run.

The teacher is local (`LocalTeacher`: a checkpoint loaded only while the cache is built) or
served (`ServedScorer`: any endpoint returning prompt log-probabilities by token id, identified
by its model name); both fill the same layout.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from convdistill.errors import BadRecipe
from convdistill.trainers.served_teacher import ServedTeacher, check_tokenizer, score_jobs_served
from convdistill.trainers.teacher_scoring import ScoringJob, TeacherView, plan_jobs, score_jobs

Scored = dict[int, tuple[torch.Tensor, torch.Tensor]]

FORMAT = 1


def teacher_identity(folder: Path) -> dict[str, Any]:
    """What makes a teacher checkpoint itself: its config and the size and time of its weights."""
    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file())
    return {
        "folder": str(folder.resolve()),
        "config": (folder / "config.json").read_text() if (folder / "config.json").is_file() else "",
        "weights": [(p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in files],
    }


def fingerprint(identity: dict[str, Any], views: Sequence[TeacherView], k: int, temperature: float) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"format": FORMAT, "teacher": identity, "k": k,
                              "temperature": temperature}, sort_keys=True).encode())
    for view in views:
        digest.update(np.asarray(view.input_ids, dtype=np.int32).tobytes())
        digest.update(b"|")
        digest.update(np.asarray(view.positions, dtype=np.int32).tobytes())
        digest.update(b"#")
    return digest.hexdigest()


class TeacherScorer(Protocol):
    """Where a cache's targets come from."""

    @property
    def name(self) -> str: ...

    def identity(self) -> dict[str, Any]: ...

    def score(self, jobs: Sequence[ScoringJob], k: int, temperature: float,
              progress: Callable[[int], None]) -> Scored: ...


@dataclass
class LocalTeacher:
    """A causal checkpoint, loaded by `load()` only when a cache is built, and released after."""

    folder: Path
    load: Callable[[], Any]
    pad_id: int
    vocab_size: int
    max_batch_tokens: int = 4096

    @property
    def name(self) -> str:
        return str(self.folder)

    def identity(self) -> dict[str, Any]:
        return teacher_identity(self.folder)

    def score(self, jobs: Sequence[ScoringJob], k: int, temperature: float,
              progress: Callable[[int], None]) -> Scored:
        model = self.load()
        return score_jobs(model, jobs, k, temperature, self.pad_id, self.vocab_size, self.max_batch_tokens,
                          progress)  # the model goes with this frame: the student trains without it


@dataclass
class ServedScorer:
    """A teacher behind an endpoint; `tokenizer` is the student's, checked against the
    endpoint's on the texts about to be scored before anything else is sent."""

    teacher: ServedTeacher
    tokenizer: Any
    max_batch_tokens: int = 4096
    probe_texts: int = 8  # sequences whose text is checked

    @property
    def name(self) -> str:
        return self.teacher.name

    def identity(self) -> dict[str, Any]:
        return self.teacher.identity()

    def score(self, jobs: Sequence[ScoringJob], k: int, temperature: float,
              progress: Callable[[int], None]) -> Scored:
        if temperature != 1.0:
            raise BadRecipe(f"kd_temperature {temperature}: a served teacher's log-probabilities are at "
                            "temperature 1 (top-k alone cannot be re-tempered); use 1.0 or a local teacher")
        texts = [self.tokenizer.decode(job.input_ids) for job in jobs[: self.probe_texts]]
        check_tokenizer(self.teacher, self.tokenizer, texts)
        return score_jobs_served(self.teacher, jobs, k, self.max_batch_tokens, progress)


@dataclass
class LogitCache:
    """An opened cache: rows of each example, memory-mapped."""

    folder: Path
    offsets: np.ndarray
    token_ids: np.ndarray
    log_probs: np.ndarray
    meta: dict[str, Any]

    @classmethod
    def open(cls, folder: Path) -> LogitCache:
        meta = json.loads((folder / "meta.json").read_text())
        return cls(
            folder,
            np.load(folder / "offsets.npy"),
            np.load(folder / "token_ids.npy", mmap_mode="r"),
            np.load(folder / "log_probs.npy", mmap_mode="r"),
            meta,
        )

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def rows(self, example: int) -> tuple[torch.Tensor, torch.Tensor]:
        start, end = int(self.offsets[example]), int(self.offsets[example + 1])
        ids = torch.from_numpy(np.array(self.token_ids[start:end], dtype=np.int64))
        return ids, torch.from_numpy(np.array(self.log_probs[start:end], dtype=np.float32))


def _write(folder: Path, views: Sequence[TeacherView], scored: dict[int, tuple[torch.Tensor, torch.Tensor]],
           k: int, meta: dict[str, Any]) -> None:
    counts = [len(view.positions) for view in views]
    offsets = np.zeros(len(views) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(counts)
    rows = int(offsets[-1])
    width = min(k, meta["vocab_size"])
    token_ids = np.lib.format.open_memmap(folder / "token_ids.npy", mode="w+", dtype=np.int32, shape=(rows, width))
    log_probs = np.lib.format.open_memmap(folder / "log_probs.npy", mode="w+", dtype=np.float32, shape=(rows, width))
    for index in range(len(views)):
        ids, values = scored[index]
        token_ids[offsets[index]: offsets[index + 1]] = ids.numpy()
        log_probs[offsets[index]: offsets[index + 1]] = values.numpy()
    token_ids.flush()
    log_probs.flush()
    del token_ids, log_probs
    np.save(folder / "offsets.npy", offsets)
    (folder / "meta.json").write_text(json.dumps({**meta, "examples": len(views), "rows": rows}, indent=2) + "\n")


def _log(line: str) -> None:
    print(f"[convdistill] {line}", file=sys.stderr, flush=True)


def build_or_open(
    cache_dir: Path,
    teacher: TeacherScorer,
    views: Sequence[TeacherView],
    k: int,
    temperature: float,
    vocab_size: int,
    log: Any = None,
) -> LogitCache:
    """The cache for these views: opened when it exists, else computed by the teacher (a local
    one is loaded only then, and released before training starts) and written atomically."""
    log = log or _log
    key = fingerprint(teacher.identity(), views, k, temperature)
    folder = Path(cache_dir) / key[:16]
    if (folder / "meta.json").is_file():
        cache = LogitCache.open(folder)
        if cache.meta.get("fingerprint") == key:
            log(f"teacher logits: reusing {folder} ({cache.meta['rows']} tokens, top-{cache.meta['k']})")
            return cache
    jobs = plan_jobs(views)
    total = sum(len(job.input_ids) for job in jobs)
    log(f"teacher logits: scoring {len(views)} examples in {len(jobs)} teacher sequences "
        f"({total} tokens) with {teacher.name} ...")
    started = time.perf_counter()
    done = 0
    last_report = started

    def progress(tokens: int) -> None:
        nonlocal done, last_report
        done += tokens
        now = time.perf_counter()
        if now - last_report >= 10 or done >= total:
            rate = done / max(now - started, 1e-9)
            log(f"teacher logits: {min(done, total)}/{total} tokens, {rate:.0f} tokens/s")
            last_report = now

    scored = teacher.score(jobs, k, temperature, progress)
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    meta = {"fingerprint": key, "format": FORMAT, "teacher": teacher.name, "k": k, "temperature": temperature,
            "vocab_size": vocab_size, "seconds": round(time.perf_counter() - started, 2)}
    _write(partial, views, scored, k, meta)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    log(f"teacher logits: wrote {folder} in {meta['seconds']} s")
    return LogitCache.open(folder)
