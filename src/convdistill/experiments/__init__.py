"""Experiments: reproducible studies run with the toolkit's own trainers, teacher and eval suite.

    EXPERIMENTS                      name -> what it asks
    run_experiment(name, ...)        run one by name (`convdistill experiment run NAME`)

Each experiment keeps its small results (JSON, tables, PNG plots) in
`experiments/<name>/results/` and its data, checkpoints and caches in `experiments/<name>/work/`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

EXPERIMENTS: dict[str, str] = {
    "multiturn_vs_singleturn": "Does multi-turn tree distillation beat single-turn distillation, and which "
    "student family (T5 or Llama, equal size) wins? Four regimes x two families x seeds.",
}


def default_root(name: str, quick: bool) -> Path:
    """`experiments/<name>` of the repository (its `quick/` subfolder for --quick runs, so a quick
    run never overwrites the full run's results)."""
    root = Path(__file__).resolve().parents[3] / "experiments" / name
    return root / "quick" if quick else root


def run_experiment(name: str, quick: bool = False, root: str | Path | None = None, **options: Any) -> Any:
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}: choose from {', '.join(EXPERIMENTS)}")
    from convdistill.experiments import multiturn

    settings = multiturn.settings_for(quick, options.pop("seeds", None), options.pop("changes", None))
    return multiturn.run(root or default_root(name, quick), settings, **options)
