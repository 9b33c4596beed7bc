"""`run_demo`: the whole pipeline as a list of stages, run one after another in this process.

    1 data      statistics and sampled paths of the export
    2 extend    the teacher continues a few trees
    3 export    SFT paths and DPO pairs from the extended trees
    4 train     students built from the teacher's layers (a T5Gemma and a depth-pruned Llama), then SFT,
                then DPO and logit distillation from the SFT checkpoint
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
    for family in FAMILIES:
        if built:
            stages.append(("4", Stage(
                f"4-{family}-student", f"the {family} student, built from {EMBEDDED_TEACHER}'s layers",
                lambda w, f=family: training.student_stage(config, f, w, log))))
        stages.append(("4", Stage(
            f"4-{family}-sft", f"SFT of the {kind}{family} student",
            lambda w, f=family: training.train_stage(
                config, f, "sft", result("3-export")["paths_file"],
                result(f"4-{f}-student")["checkpoint"] if built else None, w, log),
            needs=("3-export", *((f"4-{family}-student",) if built else ())))))
    for method, file_key in (("dpo", "pairs_file"), ("distill", "paths_file")):
        for family in FAMILIES:
            stages.append(("4", Stage(  # noqa: PERF401 (one stage per statement reads best)
                f"4-{family}-{method}",
                f"{'DPO' if method == 'dpo' else 'logit distillation'} of the {kind}{family} student (from its SFT)",
                lambda w, f=family, m=method, k=file_key: training.train_stage(
                    config, f, m, result("3-export")[k], result(f"4-{f}-sft")["checkpoint"], w, log),
                needs=("3-export", f"4-{family}-sft"))))
    teacher_endpoint = None if config.embedded_teacher else config.teacher_base_url
    stages.append(("5", Stage("5-controls", "regression suite: control models that do not converse (the floor)",
                              lambda w: evaluation.controls_stage(config, w, log))))
    stages.append(("5", Stage("5-teacher", f"regression suite: teacher {config.teacher_name}",
                              lambda w: evaluation.eval_stage(config, f"teacher {config.teacher_name}",
                                                              config.teacher_name, w, log, teacher_endpoint))))
    for family in FAMILIES:
        stages.append(("5", Stage(
            f"5-{family}-init", f"regression suite: untrained {kind}{family} (the starting point)",
            lambda w, f=family: evaluation.eval_stage(config, f"{label(f)} untrained",
                                                      result(f"4-{f}-sft")["init_checkpoint"], w, log),
            needs=(f"4-{family}-sft",))))
        for method in ("sft", "dpo", "distill"):
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

