"""Experiments: reproducible studies run with the toolkit's own trainers, teacher and eval suite.

    EXPERIMENTS                      name -> what it asks
    run_experiment(name, ...)        run one by name (`convdistill experiment run NAME`)

Each experiment keeps its small results (JSON, tables, PNG plots) in
`experiments/<name>/results/` and its data, checkpoints and caches in `experiments/<name>/work/`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from convdistill.errors import BadRecipe

EXPERIMENTS: dict[str, str] = {
    "multiturn_vs_singleturn": "Does multi-turn tree distillation beat single-turn distillation, and which "
    "student family (T5 or Llama, equal size, both built from the teacher) wins, and how close is SmolLM2 "
    "with LoRA? Four regimes x three students x seeds (--preset tiny: the first run's tiny random students; "
    "--preset own_history: distilled on the student's own history against the data's, scored on both).",
}


def default_root(name: str, quick: bool, preset: str = "full") -> Path:
    """`experiments/<name>` under the current folder (in a checkout's root: the committed results),
    its `quick/` subfolder for --quick runs and `<preset>/` for another preset, so neither
    overwrites the full run's results. Where the package is installed plays no part."""
    root = Path("experiments") / name
    return root / "quick" if quick else root if preset == "full" else root / preset


def run_experiment(name: str, quick: bool = False, root: str | Path | None = None, **options: Any) -> Any:
    if name not in EXPERIMENTS:
        raise BadRecipe(f"unknown experiment {name!r}: choose from {', '.join(EXPERIMENTS)}")
    from convdistill.experiments import multiturn
    from convdistill.experiments.settings import settings_for

    preset = options.pop("preset", "full")
    settings = settings_for(quick, options.pop("seeds", None), options.pop("changes", None), preset)
    return multiturn.run(root or default_root(name, quick, preset), settings, **options)
