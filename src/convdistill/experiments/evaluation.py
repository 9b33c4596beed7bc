"""Scoring a student (and the teacher) the same way for every unit: the held-out recall suites
and the shipped real-text suites, gold history, greedy."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson

from convdistill.experiments.metrics import (
    copy_accuracy,
    first_turn,
    forced_choice,
    mean_share,
    recall_accuracy,
    recall_distance,
)
from convdistill.experiments.settings import Settings
from convdistill.files import project_file
from convdistill.progress_log import Log
from convdistill.trainers.data import read_jsonl


def teacher_recall(settings: Settings, suite: Path, threads: int, log: Log,
                   checkpoint: str | None = None) -> dict[str, Any] | None:
    """The teacher's own recall on the first `teacher_per_distance` held-out cases per distance
    (greedy, gold history): what regime d can hope to pass on to the students. `checkpoint`: a
    corrected teacher's folder instead of `settings.teacher`."""
    if settings.teacher_per_distance <= 0:
        return None
    import torch

    from convdistill.eval import LocalBackend, RunOptions, Suite, load_suite, run_suite
    from convdistill.models import resolve_model

    torch.set_num_threads(threads)
    cases = load_suite(suite).cases
    kept: dict[str, int] = {}
    chosen = []
    for case in cases:
        distance = recall_distance(case.tags)
        if kept.get(distance, 0) < settings.teacher_per_distance:
            kept[distance] = kept.get(distance, 0) + 1
            chosen.append(case)
    started = time.perf_counter()
    folder = checkpoint or resolve_model(settings.teacher)
    name = "corrected teacher" if checkpoint else "teacher"
    backend = LocalBackend(folder, settings.teacher if checkpoint is None else "corrected-teacher",
                           settings.eval_batch_size, settings.memory_max_tokens)
    results = run_suite(Suite(str(suite), tuple(chosen)), backend, RunOptions(history="gold", nll=False))
    by = recall_accuracy(results)
    out = {"cases": len(chosen), "accuracy_by_distance": by, "accuracy": mean_share(by),
           "copy": copy_accuracy(results), "seconds": round(time.perf_counter() - started, 1)}
    log(f"{name}: recall {out['accuracy']:.3f} on {len(chosen)} held-out cases ({out['seconds']:.0f} s)")
    return out


def evaluate(checkpoint: Path, settings: Settings, suites: dict[str, str], out: Path,
             first_turns: str | None = None) -> dict[str, Any]:
    """The held-out recall suites and the shipped real-text suites, gold history, greedy; with
    `settings.self_history`, the unseen recall suite and the real suites on the model's own
    history as well."""
    from convdistill.eval import LocalBackend, RunOptions, Suite, load_suite, run_suite

    backend = LocalBackend(checkpoint, batch_size=settings.eval_batch_size, max_tokens=settings.memory_max_tokens)
    metrics: dict[str, Any] = {}
    started = time.perf_counter()
    loaded = {name: load_suite(path) for name, path in suites.items()}
    for name, suite in loaded.items():
        # The seen suite's fact turns give copying within a turn; of the unseen suite only the
        # questions count, so its other turns stay history (a third of a unit's evaluation).
        only = () if name == "recall_seen" else ("recall_of",)
        results = run_suite(suite, backend, RunOptions(history="gold", nll=False, only_checks=only))
        (out / f"{name}.json").write_bytes(orjson.dumps(results))
        metrics[name] = {"accuracy_by_distance": recall_accuracy(results), "copy": copy_accuracy(results),
                         "score": results["summary"]["score"], "by_depth": results["summary"]["by_depth"]}
        # Forced choice among the unseen values would rank output rows no training ever touched.
        wanted = settings.forced_choice and name == "recall_seen"
        choice = forced_choice(backend, suite.cases, "train") if wanted else {}
        metrics[name]["choice_by_distance"] = choice
        for key, by in (("accuracy", metrics[name]["accuracy_by_distance"]), ("choice", choice)):
            metrics[name][key] = mean_share(by)
    if settings.self_history:
        # every turn generated, each after the model's own earlier replies: the unseen facts are
        # stated by the user, but the turns between them and the question are the model's
        results = run_suite(loaded["recall_unseen"], backend, RunOptions(history="self", nll=False))
        (out / "recall_unseen_self.json").write_bytes(orjson.dumps(results))
        by = recall_accuracy(results)
        metrics["recall_unseen_self"] = {"accuracy_by_distance": by, "accuracy": mean_share(by),
                                         "score": results["summary"]["score"]}
    parts = [load_suite(project_file(p)) for p in settings.real_suites]
    real = Suite("+".join(s.path for s in parts),
                 tuple(c for s in parts for c in (s.cases[: settings.real_cases] if settings.real_cases else s.cases)))
    backend.max_tokens = settings.real_max_tokens
    results = run_suite(real, backend, RunOptions(history="gold"))
    (out / "real.json").write_bytes(orjson.dumps(results))
    s = results["summary"]
    metrics["real"] = {"score": s["score"], "turns_passed": s["turns_passed"], "turns": s["turns"],
                       "by_depth": s["by_depth"], "by_tag": s["by_tag"], "nll": s["mean_reference_nll"],
                       "first_turn": first_turn(results)}
    if settings.self_history:
        results = run_suite(real, backend, RunOptions(history="self", nll=False))
        (out / "real_self.json").write_bytes(orjson.dumps(results))
        s = results["summary"]
        metrics["real_self"] = {"score": s["score"], "cases_passed": s["cases_passed"], "cases": s["cases"],
                                "turns_passed": s["turns_passed"], "turns": s["turns"], "by_depth": s["by_depth"]}
    if first_turns and Path(first_turns).is_file():
        pairs = [(p["history"], p["reply"]) for p in read_jsonl(Path(first_turns))]
        nlls = backend.reference_nll(pairs) if pairs else []
        metrics["heldout_first_turn_nll"] = sum(nlls) / len(nlls) if nlls else None
    metrics["eval_seconds"] = round(time.perf_counter() - started, 1)
    return metrics
