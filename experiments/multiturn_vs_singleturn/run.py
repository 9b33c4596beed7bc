"""Rerun the multi-turn vs single-turn experiment: the same as
`convdistill experiment run multiturn_vs_singleturn [--quick] [--jobs 2] [--threads 1]`.

    python experiments/multiturn_vs_singleturn/run.py            # full run, rewrites docs/experiments.md
    python experiments/multiturn_vs_singleturn/run.py --quick    # seconds-scale smoke run, under quick/
"""

from __future__ import annotations

import sys

from convdistill.cli.main import app

if __name__ == "__main__":
    app(["experiment", "run", "multiturn_vs_singleturn", *sys.argv[1:]])
