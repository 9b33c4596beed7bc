"""Eval stages: the same regression suite, turn by turn, for each student and for the teacher."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from convdistill.demo.config import DemoConfig
from convdistill.demo.progress import Heartbeat
from convdistill.demo.stages import Log
from convdistill.eval.report import summary_line
from convdistill.files import project_file, write_json


def demo_suite(config: DemoConfig) -> Any:
    """The shipped suites the demo scores, cut to the configured number of cases each."""
    from convdistill.eval import Suite, load_suite

    parts = []
    for entry in config.sizes.eval_suites:
        suite = load_suite(project_file(entry.file))
        parts.append(Suite(suite.path, suite.cases[: entry.cases] if entry.cases else suite.cases))
    cases = tuple(c for s in parts for c in s.cases)
    return Suite("+".join(s.path for s in parts), cases)


def eval_stage(config: DemoConfig, label: str, model: str, workdir: Path, log: Log,
               endpoint: str | None = None) -> dict[str, Any]:
    """Score `model` (a checkpoint folder, an embedded name, or a model at `endpoint`)."""
    from convdistill.eval import RunOptions, open_backend, run_suite, write_report

    suite = demo_suite(config)
    sizes = config.sizes
    turns = sum(len(c.turns) for c in suite.cases)
    log(f"    {label}: {len(suite.cases)} cases, {turns} turns, gold history, greedy, "
        f"at most {sizes.eval_max_tokens} tokens a reply")
    backend = open_backend(model, endpoint, api_key=os.environ.get("OPENAI_API_KEY"),
                           batch_size=sizes.eval_batch_size, max_tokens=sizes.eval_max_tokens,
                           temperature=0.0, seed=config.seed,
                           cache_path=config.out / "teacher_cache.sqlite" if endpoint else None)
    backend.name = label  # the report names models by their role in the demo, not their folder
    done = [0]
    with Heartbeat(log, lambda: f"{done[0]}/{turns} turns generated"):
        results = run_suite(suite, backend, RunOptions(history="gold"),
                            progress=lambda n, total: done.__setitem__(0, n))
    write_json(workdir / "results.json", results)
    write_report(results, workdir / "report.md")
    s = results["summary"]
    nll = s.get("mean_reference_nll")
    log(f"    {summary_line(s)}" + (f", mean reference NLL {nll:.3f}" if nll is not None else "")
        + f" ({results['generation_seconds']:.0f} s generating)")
    return {"label": label, "model": model, "endpoint": endpoint, "results": str(workdir / "results.json"),
            "summary": s, "generation_seconds": results["generation_seconds"]}


def controls_stage(config: DemoConfig, workdir: Path, log: Log) -> dict[str, Any]:
    """The same suite answered by control models that do not converse (a constant reply, fluent
    unrelated replies, an echo, nothing, another case's reply): the floor the report shows
    beside the students. Instant: controls generate nothing."""
    from convdistill.eval.runner import run_controls

    entries = []
    for results in run_controls(demo_suite(config), histories=("gold",)):
        name = str(results["model"]).removeprefix("control:")
        path = workdir / f"control-{name}.json"
        write_json(path, results)
        log(f"    control {name}: {summary_line(results['summary'])}")
        entries.append({"label": f"control: {name}", "model": results["model"], "endpoint": None,
                        "results": str(path), "summary": results["summary"], "generation_seconds": 0.0})
    return {"controls": entries}
