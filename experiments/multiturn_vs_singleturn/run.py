"""Rerun the multi-turn vs single-turn experiment: the same as
`convdistill experiment run multiturn_vs_singleturn [--quick] [--jobs 2] [--threads 1]`.

    python experiments/multiturn_vs_singleturn/run.py            # full run, rewrites docs/experiments.md
    python experiments/multiturn_vs_singleturn/run.py --quick    # seconds-scale smoke run, under quick/
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from convdistill.cli.main import app

if __name__ == "__main__":
    # The command's defaults (experiments/NAME, docs/experiments.md) are relative to the current
    # folder: run from the checkout's root wherever this script is called from.
    os.chdir(Path(__file__).resolve().parents[2])
    app(["experiment", "run", "multiturn_vs_singleturn", *sys.argv[1:]])
