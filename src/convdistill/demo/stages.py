"""Stages with done-markers: a rerun skips what finished, an interrupted stage resumes.

Each stage writes its outputs into its own folder under the demo's output folder, then a marker
`<out>/stages/<name>.json` holding its summary, timing and a key: the config's fingerprint plus
the run ids of the stages it read from. A stage is skipped when its marker's key matches the
current one, so changing a setting, or rerunning an upstream stage, reruns exactly what depends
on it. A stage without a marker (never run, or interrupted) keeps its folder when the folder was
started under the same key: the teacher's request cache and the trainers' checkpoint-* folders
then let it continue instead of starting over.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convdistill.errors import Unavailable
from convdistill.files import DoneMarker, read_json
from convdistill.progress_log import Log, stderr_log


class StageUnavailable(Unavailable):
    """Raised by a stage that cannot run here (e.g. a trainer not in this version): the stage is
    reported as skipped, writes no marker (a later run tries again), and its dependants skip."""


class StageFailed(Exception):
    """A stage raised: carries the stage's name and the original error."""

    def __init__(self, stage: str, error: BaseException):
        super().__init__(f"stage {stage}: {type(error).__name__}: {error}")
        self.stage = stage
        self.error = error


@dataclass
class StageRecord:
    name: str
    title: str
    status: str  # done (this run) | cached (finished earlier) | skipped (unavailable) | blocked
    seconds: float = 0.0
    result: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    run_id: str = ""


@dataclass
class Stage:
    """One unit of work: `run(workdir)` returns a JSON-serialisable summary of what it did."""

    name: str
    title: str
    # called with the stage's work folder (lambdas bind their loop values as defaults)
    run: Callable[..., dict[str, Any]]
    needs: tuple[str, ...] = ()  # stages whose outputs it reads (all must be done)
    uses: tuple[str, ...] = ()  # stages it reads when they ran (optional, e.g. distillation)
    folder: bool = True  # False: it writes into the output folder itself (the report)


class StageRunner:
    def __init__(self, out: Path, fingerprint: str, log: Log = stderr_log):
        self.out = Path(out)
        self.fingerprint = fingerprint
        self.log = log
        self.records: dict[str, StageRecord] = {}
        self.markers = self.out / "stages"
        self.markers.mkdir(parents=True, exist_ok=True)

    def workdir(self, name: str) -> Path:
        return self.out / name

    def _key(self, stage: Stage) -> dict[str, Any]:
        upstream = {n: self.records[n].run_id for n in (*stage.needs, *stage.uses)
                    if n in self.records and self.records[n].run_id}
        return {"fingerprint": self.fingerprint, "upstream": upstream}

    def run(self, stage: Stage, position: str) -> StageRecord:
        head = f"[demo {position}] {stage.title}"
        missing = [n for n in stage.needs if self.records.get(n) is None
                   or self.records[n].status not in ("done", "cached")]
        if missing:
            record = StageRecord(stage.name, stage.title, "blocked", reason=f"needs {', '.join(missing)}")
            self.log(f"{head}: skipped ({record.reason}, which did not run)")
            return self._keep(record)
        key = self._key(stage)
        marker = DoneMarker(self.markers / f"{stage.name}.json", key)
        done = marker.done()
        if done is not None:
            record = StageRecord(stage.name, stage.title, "cached", done.get("seconds", 0.0),
                                 done.get("result", {}), run_id=done.get("run_id", ""))
            self.log(f"{head}: finished earlier ({record.seconds:.0f} s), skipped")
            return self._keep(record)
        marker.clear()
        resumed = False
        workdir = self.out
        if stage.folder:
            workdir = self.workdir(stage.name)
            started = workdir / ".started.json"
            if workdir.exists() and read_json(started) != key:
                shutil.rmtree(workdir)  # made under other settings or from other inputs: start clean
            resumed = started.exists()
            workdir.mkdir(parents=True, exist_ok=True)
            started.write_text(json.dumps(key))
        self.log(f"{head} ..." + (" (resuming an interrupted run)" if resumed else ""))
        clock = time.perf_counter()
        try:
            result = stage.run(workdir)
        except StageUnavailable as exc:
            record = StageRecord(stage.name, stage.title, "skipped", reason=str(exc))
            self.log(f"{head}: not available: {exc}")
            return self._keep(record)
        except KeyboardInterrupt:
            self.log(f"{head}: interrupted after {time.perf_counter() - clock:.0f} s; a rerun resumes here")
            raise
        except Exception as exc:
            # Named here so that the one-line error the CLI prints says where the run stopped.
            self.log(f"{head}: failed after {time.perf_counter() - clock:.0f} s; a rerun resumes here")
            raise StageFailed(stage.name, exc) from exc
        seconds = round(time.perf_counter() - clock, 1)
        run_id = uuid.uuid4().hex[:12]
        marker.mark({"name": stage.name, "title": stage.title, "key": key, "run_id": run_id,
                     "seconds": seconds, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "result": result})
        self.log(f"{head}: done in {seconds:.0f} s")
        return self._keep(StageRecord(stage.name, stage.title, "done", seconds, result, run_id=run_id))

    def _keep(self, record: StageRecord) -> StageRecord:
        self.records[record.name] = record
        return record

    def result(self, name: str) -> dict[str, Any] | None:
        record = self.records.get(name)
        return record.result if record is not None and record.status in ("done", "cached") else None


# What a demo writes into its output folder; `clean` removes exactly these, never anything else.
OWNED = ("demo.json", "stages", "report.md", "loss_curves.png", "score_by_depth.png",
         "teacher_cache.sqlite", "teacher_cache.sqlite-wal", "teacher_cache.sqlite-shm")


def clean(out: Path) -> None:
    """Forget an earlier demo run in `out` (its stage folders, markers, report and cache)."""
    out = Path(out)
    if not out.is_dir():
        return
    for entry in out.iterdir():
        numbered = entry.is_dir() and entry.name[:2] in {f"{i}-" for i in range(1, 7)}
        if entry.name in OWNED or numbered:
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
