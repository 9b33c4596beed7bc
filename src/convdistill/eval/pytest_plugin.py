"""pytest plugin: `pytest eval/suites/SUITE.jsonl --convdistill-model M [--convdistill-baseline B]`.

Each case of a suite file becomes a test item. The model answers the whole file in one batched
run (the first item to need it pays), and each item then checks its own case: without a
baseline every check of every turn must pass; with one, the case fails only when its score
dropped by more than --convdistill-tolerance. A failure reads like a failing assertion: the
turn, the user message, the reply, the checks that failed (and the baseline's reply beside it).

Registered through the `pytest11` entry point, so it is active wherever convdistill is
installed; it collects nothing unless --convdistill-model is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

_BACKENDS = pytest.StashKey[dict[str, Any]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("convdistill", "convdistill multi-turn regression suites")
    group.addoption("--convdistill-model", default=None,
                    help="Checkpoint folder, embedded model name, or the model name at --convdistill-endpoint. "
                    "Collects *.jsonl suite files when given.")
    group.addoption("--convdistill-endpoint", default=None, help="OpenAI-compatible base URL for the model.")
    group.addoption("--convdistill-baseline", default=None,
                    help="Results JSON of `convdistill eval run`: fail only cases that regressed.")
    group.addoption("--convdistill-tolerance", type=float, default=0.0,
                    help="Largest allowed drop of a case score against the baseline.")
    group.addoption("--convdistill-history", default="gold", choices=("gold", "self"), help="History mode.")
    group.addoption("--convdistill-max-tokens", type=int, default=128, help="Longest reply.")
    group.addoption("--convdistill-batch-size", type=int, default=16, help="Local generation batch.")
    group.addoption("--convdistill-threads", type=int, default=None, help="torch threads for a local model.")
    group.addoption("--convdistill-judge-url", default=None, help="Judge endpoint (judge checks skip without).")
    group.addoption("--convdistill-judge-model", default=None, help="Judge model name.")
    group.addoption("--convdistill-judge-samples", type=int, default=3, help="Judgments per turn (median).")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_BACKENDS] = {}


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix == ".jsonl" and parent.config.getoption("convdistill_model"):
        return SuiteFile.from_parent(parent, path=file_path)
    return None


class CaseFailed(AssertionError):
    """A case that failed a check or regressed; its message is the whole report."""


class SuiteFile(pytest.File):
    _results: dict[str, Any] | None = None

    def collect(self) -> Any:
        from convdistill.eval.suite import SuiteError, load_suite

        try:
            self.suite = load_suite(self.path)
        except SuiteError as exc:
            raise self.CollectError(str(exc)) from None
        for tag in sorted({t for case in self.suite.cases for t in case.tags}):
            self.config.addinivalue_line("markers", f"{tag.replace('-', '_')}: suite cases tagged {tag}")
        for case in self.suite.cases:
            yield CaseItem.from_parent(self, name=case.id, case_id=case.id, tags=case.tags)

    def _backend(self) -> Any:
        from convdistill.eval.backends import open_backend

        opt = self.config.getoption
        key = f"{opt('convdistill_model')}@{opt('convdistill_endpoint')}"
        backends = self.config.stash[_BACKENDS]
        if key not in backends:  # one model load per session, whatever the number of suite files
            if opt("convdistill_threads"):
                import torch

                torch.set_num_threads(opt("convdistill_threads"))
            backends[key] = open_backend(
                opt("convdistill_model"), opt("convdistill_endpoint"),
                batch_size=opt("convdistill_batch_size"), max_tokens=opt("convdistill_max_tokens"),
            )
        return backends[key]

    def results(self) -> dict[str, Any]:
        if self._results is None:
            from convdistill.eval.judge import Judge
            from convdistill.eval.runner import RunOptions, run_suite

            opt = self.config.getoption
            judge = None
            if opt("convdistill_judge_url") and opt("convdistill_judge_model"):
                judge = Judge(opt("convdistill_judge_url"), opt("convdistill_judge_model"),
                              samples=opt("convdistill_judge_samples"))
            self._results = run_suite(self.suite, self._backend(), RunOptions(opt("convdistill_history"), judge))
        return self._results

    def baseline(self) -> dict[str, Any] | None:
        from convdistill.eval.runner import load_results

        path = self.config.getoption("convdistill_baseline")
        return load_results(path) if path else None


class CaseItem(pytest.Item):
    def __init__(self, *, case_id: str, tags: tuple[str, ...], **kwargs: Any):
        super().__init__(**kwargs)
        self.case_id = case_id
        for tag in tags:
            self.add_marker(tag.replace("-", "_"))  # `-m context_memory` selects an ability

    def runtest(self) -> None:
        from convdistill.eval.compare import compare_results, format_regressions

        parent = self.parent
        assert isinstance(parent, SuiteFile)
        results = parent.results()
        case = next(c for c in results["cases"] if c["id"] == self.case_id)
        baseline = parent.baseline()
        if baseline is None:
            failing = [t for t in case["turns"] if not t["passed"]]
            if failing:
                raise CaseFailed("\n".join(_turn_failure(self.case_id, t) for t in failing))
            return
        base_cases = [c for c in baseline["cases"] if c["id"] == self.case_id]
        if not base_cases:
            return  # a new case: nothing to regress from
        comparison = compare_results(
            {**results, "cases": [case]}, {**baseline, "cases": base_cases},
            self.config.getoption("convdistill_tolerance"),
        )
        if comparison.failed:
            raise CaseFailed(format_regressions(comparison).rsplit("\n", 1)[0])

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, CaseFailed):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"case {self.case_id}"


def _turn_failure(case_id: str, turn: dict[str, Any]) -> str:
    lines = [f"case {case_id}, turn {turn['depth']} (score {turn['score']:.3f}):" if turn["score"] is not None
             else f"case {case_id}, turn {turn['depth']}:",
             f"    user:  {turn['user']!r}", f"    reply: {turn['reply']!r}"]
    lines += [f"E   assert {c['name']}: {c['detail']}" for c in turn["checks"] if c["passed"] is False]
    return "\n".join(lines)
