"""`run_demo`: the whole pipeline as a list of stages, run one after another in this process.

    1 data      statistics and sampled paths of the export
    2 extend    the teacher continues a few trees
    3 export    SFT paths and DPO pairs from the extended trees
    4 train     teacher correction (the local teacher fine-tuned on the training paths); students built
                from the teacher's layers (a T5Gemma and a pruned Llama), then logit distillation
                from the corrected teacher (and, with --methods, SFT and DPO)
    5 eval      the regression suite on every student, on the teacher, and on control models
                that do not converse (the floor)
    6 report    Markdown with tables, loss curves and score by turn depth
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from convdistill.demo.config import EMBEDDED_TEACHER, FAMILIES, DemoConfig, student_label
from convdistill.demo.stages import Stage, StageRecord, StageRunner
from convdistill.files import DoneMarker
from convdistill.progress_log import Log, stderr_log

STAGE_COUNT = 6


@dataclass
class DemoOutcome:
    records: list[StageRecord]
    report: Path | None
    wall_s: float


def _stages(config: DemoConfig, runner: StageRunner, log: Log, clock: float) -> list[tuple[str, Stage]]:
    from convdistill.demo import data, evaluation, report, training

    def result(name: str) -> dict:
        found = runner.result(name)
        assert found is not None, f"stage {name} is a dependency and has finished"
        return found

    def label(family: str) -> str:
        return student_label(config, family)

    stages: list[tuple[str, Stage]] = [
        ("1", Stage("1-data", "export statistics and sampled paths",
                    lambda w: data.stats_stage(config, w, log))),
        ("2", Stage("2-extend", f"teacher extension ({config.teacher_name})",
                    lambda w: data.extend_stage(config, w, log, result("1-data")["trees"]), needs=("1-data",))),
        ("3", Stage("3-export", "paths and pairs from the extended trees",
                    lambda w: data.export_stage(config, Path(result("2-extend")["output"]), w, log),
                    needs=("2-extend",))),
    ]
    built = config.sizes.students == "teacher"
    kind = "" if built else "tiny "
    methods = config.sizes.methods
    corrected = "distill" in methods and config.sizes.correct_steps > 0
    if corrected:
        stages.append(("4", Stage(
            "4-teacher-correct", f"teacher correction: {EMBEDDED_TEACHER} fine-tuned on the training paths",
            lambda w: training.correct_teacher_stage(config, result("3-export")["best_paths_file"], w, log),
            needs=("3-export",))))

    # DPO continues the distilled student, else the SFT one, else the built student.
    dpo_from = next((m for m in ("distill", "sft") if m in methods), None)

    def start(family: str, method: str) -> str | None:
        """The checkpoint a run starts from (None: the recipe's random-initialised tiny student)."""
        if method == "dpo" and dpo_from is not None:
            return result(f"4-{family}-{dpo_from}")["checkpoint"]
        return result(f"4-{family}-student")["checkpoint"] if built else None

    def upstream(family: str, method: str) -> tuple[str, ...]:
        return (*((f"4-{family}-{dpo_from}",) if method == "dpo" and dpo_from else ()),
                *((f"4-{family}-student",) if built else ()))

    if built:
        stages.extend(("4", Stage(
            f"4-{family}-student", f"the {family} student, built from {EMBEDDED_TEACHER}'s layers",
            lambda w, f=family: training.student_stage(config, f, w, log))) for family in FAMILIES)
    titles = {"sft": "SFT", "dpo": "DPO", "distill": "logit distillation"}
    for method in methods:
        for family in FAMILIES:
            source = {"dpo": {"distill": " (from its distillation)", "sft": " (from its SFT)"}.get(dpo_from or "", ""),
                      "distill": " (from the corrected teacher)" if corrected else ""}.get(method, "")
            stages.append(("4", Stage(
                f"4-{family}-{method}", f"{titles[method]} of the {kind}{family} student{source}",
                lambda w, f=family, m=method: training.train_stage(
                    config, f, m, result("3-export")["pairs_file" if m == "dpo" else "best_paths_file"],
                    start(f, m), w, log,
                    teacher=(runner.result("4-teacher-correct") or {}).get("checkpoint") if m == "distill" else None),
                needs=("3-export", *upstream(family, method)),
                uses=("4-teacher-correct",) if method == "distill" and corrected else ())))
    teacher_endpoint = None if config.embedded_teacher else config.teacher_base_url
    stages.append(("5", Stage("5-controls", "regression suite: control models that do not converse (the floor)",
                              lambda w: evaluation.controls_stage(config, w, log))))
    stages.append(("5", Stage("5-teacher", f"regression suite: teacher {config.teacher_name}",
                              lambda w: evaluation.eval_stage(config, f"teacher {config.teacher_name}",
                                                              config.teacher_name, w, log, teacher_endpoint))))
    for family in FAMILIES:
        first = f"4-{family}-{methods[0]}"
        stages.append(("5", Stage(
            f"5-{family}-init", f"regression suite: untrained {kind}{family} (the starting point)",
            lambda w, f=family, first=first: evaluation.eval_stage(
                config, f"{label(f)} untrained", result(first)["init_checkpoint"], w, log),
            needs=(first,))))
        for method in methods:
            stages.append(("5", Stage(  # noqa: PERF401 (one stage per statement reads best)
                f"5-{family}-{method}", f"regression suite: {kind}{family} after {method}",
                lambda w, f=family, m=method: evaluation.eval_stage(
                    config, f"{label(f)} {m}", result(f"4-{f}-{m}")["checkpoint"], w, log),
                needs=(f"4-{family}-{method}",))))
    every = tuple(s.name for _, s in stages)
    stages.append(("6", Stage("6-report", "report",
                              lambda w: {"report": str(report.write_report(
                                  config, list(runner.records.values()), config.out, time.perf_counter() - clock))},
                              uses=every, folder=False)))
    return stages


def run_demo(config: DemoConfig, log: Log = stderr_log) -> DemoOutcome:
    """Run (or resume) every stage; stages finished by an earlier run with the same settings are
    skipped. Outputs go under `config.out`."""
    import torch

    # The stages run one after another, so each may use every core (trainers and generation
    # use torch's intra-op threads); on a shared machine --threads lowers it.
    torch.set_num_threads(config.threads)
    _quiet_libraries()
    clock = time.perf_counter()
    config.out.mkdir(parents=True, exist_ok=True)
    fingerprint = config.fingerprint()
    settings = DoneMarker(config.out / "demo.json", fingerprint, field="fingerprint")
    earlier = settings.recorded()
    if earlier is not None and earlier.get("fingerprint") not in (None, fingerprint):
        log(f"[demo] {config.out} holds a demo run with other settings: its stages are redone with these "
            "(give another --out to keep both)")
    settings.mark({"fingerprint": fingerprint, "config": config.describe()})  # the key first in the file
    runner = StageRunner(config.out, fingerprint, log)
    log(f"[demo] {config.trees} -> {config.out} ({'quick' if config.quick else 'full'} mode, "
        f"{config.threads} threads, teacher {config.teacher_name})")
    for position, stage in _stages(config, runner, log, clock):
        runner.run(stage, f"{position}/{STAGE_COUNT}")
    wall = time.perf_counter() - clock
    report = runner.result("6-report")
    path = Path(report["report"]) if report else None
    ran = sum(r.status == "done" for r in runner.records.values())
    cached = sum(r.status == "cached" for r in runner.records.values())
    log(f"[demo] finished in {wall:.0f} s: {ran} stages ran, {cached} finished earlier"
        + (f"; report {path}" if path else ""))
    return DemoOutcome(list(runner.records.values()), path, wall)


def _quiet_libraries() -> None:
    """Keep the demo's output readable: the stages print what they do, so the libraries' own
    per-file progress bars (loading and writing shards, mapping datasets) and their deprecation
    notices about options in the shipped recipes are left out."""
    import warnings

    import datasets
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\..*")

