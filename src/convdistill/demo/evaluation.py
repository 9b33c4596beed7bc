"""Eval stages: the same regression suite, turn by turn, for each student and for the teacher."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from convdistill.demo.config import DemoConfig
from convdistill.demo.progress import Heartbeat
from convdistill.demo.stages import Log
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
    log(f"    score {s['score']:.3f}, {s['cases_passed']}/{s['cases']} cases and {s['turns_passed']}/{s['turns']} "
        f"turns passed" + (f", mean reference NLL {nll:.3f}" if nll is not None else "")
        + f" ({results['generation_seconds']:.0f} s generating)")
    return {"label": label, "model": model, "endpoint": endpoint, "results": str(workdir / "results.json"),
            "summary": s, "generation_seconds": results["generation_seconds"]}
