"""`convdistill experiment list | run NAME`: the project's experiments, rerun from one command."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from convdistill.cli.common import err_console, fail

DEFAULT_DOC = Path("docs") / "experiments.md"  # in the current folder: a checkout's root
app = typer.Typer(help="Reproducible experiments (train, evaluate, tabulate, plot).", no_args_is_help=True)


@app.command("list")
def list_experiments() -> None:
    """The experiments and what each asks."""
    from convdistill.experiments import EXPERIMENTS

    for name, what in EXPERIMENTS.items():
        typer.echo(f"{name}: {what}")


@app.command("run")
def run(
    name: Annotated[str, typer.Argument(help="Experiment name, e.g. multiturn_vs_singleturn.")],
    quick: Annotated[bool, typer.Option("--quick", help="Tiny scale (seconds): every stage for real, "
                                        "numbers meaningless. Writes under experiments/NAME/quick/.")] = False,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for results/ and work/. "
                                             "Default: experiments/NAME in the current folder (quick: "
                                             "experiments/NAME/quick).")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Units trained at once, each in its own "
                                      "process. On 2 cores, 2 jobs x 1 thread beat 1 job x 2 threads.")] = 2,
    threads: Annotated[int, typer.Option("--threads", min=1, help="torch threads per unit.")] = 1,
    seeds: Annotated[str | None, typer.Option("--seeds", help="Comma-separated seeds (default: the preset's, full 0,1; "
                                              "quick: 0).")] = None,
    doc: Annotated[Path | None, typer.Option("--doc", help="Rewrite the generated part of this Markdown file. "
                                             "Default: docs/experiments.md (when run in a checkout's root) "
                                             "for a full run, none for --quick.")] = None,
    no_doc: Annotated[bool, typer.Option("--no-doc", help="Do not touch any doc.")] = False,
    changes: Annotated[list[str] | None, typer.Option("--set", help="Change a setting, FIELD=VALUE (repeat): "
                                                      "e.g. --set max_steps=1000 --set families=t5. Fields: see "
                                                      "Settings in convdistill/experiments/settings.py.")] = None,
    keep_checkpoints: Annotated[bool, typer.Option("--keep-checkpoints", help="Keep each unit's trained "
                                                   "student in work/units/.")] = False,
    preset: Annotated[str, typer.Option("--preset", help="full (students built from the teacher), tiny "
                                        "(the first run: tiny random students) or own_history (regimes e and f, "
                                        "scored on the model's own history too); any but full writes under "
                                        "NAME/PRESET/ and no doc unless --doc.")] = "full",
) -> None:
    """Run an experiment end to end; finished units are reused when the settings are unchanged."""
    from convdistill.experiments import EXPERIMENTS, run_experiment

    if name not in EXPERIMENTS:
        fail(f"unknown experiment {name!r}: choose from {', '.join(EXPERIMENTS)}")
    try:
        seed_list = tuple(int(s) for s in seeds.split(",")) if seeds else None
    except ValueError:
        raise typer.BadParameter(f"{seeds!r}: expected comma-separated integers", param_hint="--seeds") from None
    if doc is None and not quick and not no_doc and preset == "full" and DEFAULT_DOC.is_file():
        doc = DEFAULT_DOC
    # The command as it could be typed again (also when called through experiments/NAME/run.py).
    parts = ["convdistill", "experiment", "run", name, *(["--quick"] if quick else []),
             *([f"--out={out}"] if out else []), *([f"--jobs={jobs}"] if jobs != 2 else []),
             *([f"--threads={threads}"] if threads != 1 else []), *([f"--seeds={seeds}"] if seeds else []),
             *([f"--preset={preset}"] if preset != "full" else []),
             *(f"--set={c}" for c in changes or [])]
    command = " ".join(shlex.quote(p) for p in parts)
    outcome = run_experiment(name, quick, out, seeds=seed_list, changes=changes or [], preset=preset,
                             jobs=jobs, threads=threads,
                             doc=None if no_doc else doc, keep_checkpoints=keep_checkpoints, command=command)
    err_console.print(f"results: {outcome.results}" + (f"; doc: {outcome.doc}" if outcome.doc else ""), markup=False)
