"""`convdistill demo`: the whole pipeline on the bundled sample (or your export), with a report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from convdistill.cli.common import err_console, fail
from convdistill.errors import BadRecipe


def demo_command(
    out: Annotated[Path, typer.Option("--out", "-o", file_okay=False,
                                      help="Folder for every stage's output and the report.")] = Path("runs/demo"),
    trees: Annotated[Path | None, typer.Option(
        "--trees", dir_okay=False,
        help="Open-Assistant export to start from. Default: the bundled conversation_trees/oasst_en_100_tree.jsonl."),
    ] = None,
    teacher_base_url: Annotated[str | None, typer.Option(
        "--teacher-base-url",
        help="OpenAI-compatible teacher endpoint (e.g. http://localhost:8000/v1; key from OPENAI_API_KEY). "
        "Default: the embedded SmolLM2-135M-Instruct, served on 127.0.0.1 for the run.")] = None,
    teacher_model: Annotated[str | None, typer.Option(
        "--teacher-model", help="Model name at --teacher-base-url.")] = None,
    quick: Annotated[bool, typer.Option(
        "--quick", help="Reduced sizes (one tree extended, a few training steps, a few eval cases): every "
        "stage runs for real in about two minutes. Used by the test suite.")] = False,
    threads: Annotated[int | None, typer.Option(
        "--threads", min=1, help="torch threads. Default: every core that is idle at the start (all of them on "
        "a quiet machine; the stages run one after another). Threads beyond the idle cores slow every step "
        "down several times.")] = None,
    students: Annotated[str, typer.Option(
        "--students", help="teacher: students built from the embedded teacher's layers (a T5Gemma "
        "encoder-decoder and a depth-pruned Llama); tiny: random-initialised ~5M students.")] = "teacher",
    methods: Annotated[str | None, typer.Option(
        "--methods", help="Trainers run on each student, comma-separated: distill (from the corrected teacher), "
        "sft, dpo (from the distilled student). Default: distill (the full demo's 15 minutes on 2 cores hold one "
        "run of each student); --quick runs all three.")] = None,
    fresh: Annotated[bool, typer.Option(
        "--fresh", help="Start over: delete what an earlier demo wrote in --out (stage folders, markers, "
        "report, teacher cache) first. Without it, finished stages are skipped.")] = False,
) -> None:
    """Run the whole pipeline end to end and write a report.

    Stages: 1 statistics and sampled paths of the export; 2 the teacher continues a few trees;
    3 paths and pairs from the extended trees; 4 teacher correction (the local teacher fine-tuned on
    those paths), a T5 and a Llama student built from the teacher's layers, then logit
    distillation of each from the corrected teacher (--methods adds SFT and DPO); 5 the regression
    suite on the teacher, the controls and every student, untrained and trained; 6 a Markdown report
    with tables and PNG plots (OUT/report.md). Every stage's output stays in OUT/<stage>/; a rerun
    skips finished stages and resumes an interrupted one.

    Examples:
      convdistill demo
      convdistill demo --quick --out runs/demo-quick
      convdistill demo --trees my_export.jsonl.gz --teacher-base-url http://localhost:8000/v1 --teacher-model M
    """
    from convdistill.demo import make_config, run_demo
    from convdistill.demo.stages import StageFailed, clean

    try:
        config = make_config(trees, out, teacher_base_url, teacher_model, quick, threads, students, methods)
    except BadRecipe as exc:  # an option that cannot run: a usage error (exit 2), naming it
        raise typer.BadParameter(str(exc)) from None
    if fresh:
        clean(config.out)
    try:
        outcome = run_demo(config)
    except StageFailed as exc:
        fail(f"the demo stopped at {exc}")
    except KeyboardInterrupt:
        fail("interrupted; run the same command again to resume", code=130)
    if outcome.report is not None:
        typer.echo(str(outcome.report))
    else:
        err_console.print("no report was written (see the stages above)")
        raise typer.Exit(1)
