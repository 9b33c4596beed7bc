"""`convdistill demo`: the whole pipeline on a small export, end to end, resumable, with a report.

    make_config(...) -> DemoConfig     checked settings (full sizes, or --quick for CI)
    run_demo(config) -> DemoOutcome    every stage in order; finished stages are skipped on a rerun

Modules: config (sizes), stages (done-markers, resume), data (stats, teacher extension, paths
and pairs), training (the tiny recipes), evaluation (the regression suite), report (Markdown
and PNG plots), pipeline (the order of the stages).
"""

from convdistill.demo.config import FULL, QUICK, DemoConfig, Sizes, make_config
from convdistill.demo.pipeline import DemoOutcome, run_demo

__all__ = ["FULL", "QUICK", "DemoConfig", "DemoOutcome", "Sizes", "make_config", "run_demo"]
