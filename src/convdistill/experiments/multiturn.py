"""Experiment `multiturn_vs_singleturn`: does multi-turn tree distillation beat single-turn
distillation, and which student family wins?

Students that start from knowledge: built from the teacher's own layers (`models init --from`), an
encoder-decoder (T5Gemma) and a decoder-only (depth-pruned Llama) at matched parameter counts, and
SmolLM2-135M-Instruct itself with LoRA (the upper reference). `students="tiny"` runs the first
version instead: tiny random-initialised T5 and Llama students (about 5.2M parameters), kept as a
documented baseline. Every student of a run gets the same records, batch size, steps and learning
rate under four regimes:

    a  single_turn     every assistant turn as an independent prompt -> reply (LaMini style)
    b  multi_turn      every assistant turn with its whole conversation before it
    c  teacher_turns   (b) on the sample export extended by the embedded teacher
    d  distill         (c) plus logit distillation from the teacher (top-k cache, kd_weight mix)

Data: context-memory conversations from the eval generator (the controlled task; training
conversations use other seeds, and held-out cases are checked not to occur in them) mixed with
the Open-Assistant sample export (real text). Each (family, regime, seed) unit is trained with
`convdistill.trainers.train` and scored with `convdistill.eval.run_suite`; see docs/experiments.md.

Stages, in order: data (+ teacher extension, cached), units (in `jobs` worker processes, each
resumable: a finished unit's metrics are kept when its settings are unchanged), summary.

Modules, imports pointing down: `multiturn` (this recipe) -> `report`, `units`, `data` ->
`evaluation` -> `metrics`, `regimes`; `settings` and `files` below them all.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convdistill.experiments.data import prepare_data
from convdistill.experiments.report import summarize, write_doc, write_results
from convdistill.experiments.settings import FULL, NAME, QUICK, TINY, Layout, Settings, settings_for
from convdistill.experiments.units import build_students, describe_students, run_units
from convdistill.progress_log import Log, stderr_log, timed

__all__ = ["FULL", "QUICK", "TINY", "Outcome", "Settings", "run", "settings_for"]

STDERR_LOG = timed(stderr_log)  # runs take hours: each line says when


@dataclass
class Outcome:
    summary: dict[str, Any]
    results: Path
    doc: Path | None
    wall_s: float


def run(root: str | Path, settings: Settings = FULL, jobs: int = 2, threads: int = 1, doc: str | Path | None = None,
        keep_checkpoints: bool = False, command: str = "", log: Log = STDERR_LOG) -> Outcome:
    """The whole experiment: data (+ teacher), every unit, the summary table and plots, and
    (with `doc`) the generated part of docs/experiments.md."""
    layout = Layout(Path(root))
    layout.results.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    load_before = os.getloadavg()
    log(f"{NAME}: {len(settings.families)} families x {len(settings.regimes)} regimes x {len(settings.seeds)} seeds, "
        f"{settings.max_steps} steps of {settings.batch_size}; load average {load_before[0]:.2f}")
    stage = time.perf_counter()
    # The data stage (teacher, its correction, the students' builds) runs alone, on the cores
    # the units will share: `jobs` x `threads` torch threads. (On a machine shared with other
    # work, oversubscribed threads slowed the 135M teacher 3-4x here, 10 s -> 38 s: lower
    # --jobs / --threads there.) One thread left a core idle for 9.5 of the run's minutes.
    stage_threads = threads * max(1, jobs)
    data = prepare_data(settings, layout, stage_threads, log)
    data["students"] = build_students(settings, layout, stage_threads, log)
    data["student_info"] = describe_students(data["students"])
    data_s = time.perf_counter() - stage
    stage = time.perf_counter()
    units, trained = run_units(settings, layout, data, jobs, threads, keep_checkpoints, log)
    units_s = time.perf_counter() - stage
    wall = time.perf_counter() - started
    timing = {"wall_s": round(wall, 1), "data_s": round(data_s, 1), "units_s": round(units_s, 1),
              "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()],
              "cpus": os.cpu_count(), "jobs": jobs, "threads": threads, "units_trained": trained}
    earlier = _earlier_timing(layout, settings, [u["unit"] for u in units]) if trained == 0 else None
    if earlier is not None:
        # Nothing was trained: this run only rebuilt the report. Its wall time says nothing about
        # the experiment, so the report keeps the timing of the run that trained the units.
        log(f"{NAME}: every unit was cached; the report keeps the timing of the run that trained them "
            f"({earlier['wall_s'] / 60:.1f} min)")
        timing = {**earlier, "report_rebuilt_s": round(wall, 1)}
    summary = summarize(settings, data, units, timing, command)
    write_results(summary, layout.results)
    written = write_doc(summary, Path(doc), layout.results) if doc else None
    log(f"{NAME}: done in {wall / 60:.1f} min; results in {layout.results}" + (f", doc {written}" if written else ""))
    return Outcome(summary, layout.results, written, wall)


def _earlier_timing(layout: Layout, settings: Settings, names: list[str]) -> dict[str, Any] | None:
    """The timing of the last summary written for exactly these units with these settings."""
    path = layout.results / "summary.json"
    if not path.is_file():
        return None
    earlier = json.loads(path.read_text())
    units = {u["unit"]: u.get("fingerprint") for u in earlier.get("units", [])}
    if units != {name: settings.fingerprint() for name in names} or "timing" not in earlier:
        return None
    timing = earlier["timing"]
    return timing if timing.get("units_trained", len(names)) > 0 else None
