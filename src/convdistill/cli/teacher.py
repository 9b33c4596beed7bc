"""`convdistill extend | regenerate | rank`: a teacher writes new nodes into the trees."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from convdistill.cli.common import (
    DropSyntheticOpt,
    InputFile,
    LangOpt,
    OnErrorOpt,
    RejectLog,
    RejectsOpt,
    SeedOpt,
    StateOpt,
    TopKOpt,
    build_selection,
    check_choice,
    err_console,
    fail,
)
from convdistill.conversation_trees.paths import STRATEGIES
from convdistill.models.home import convdistill_home
from convdistill.teacher.client import Budget, EndpointSettings, FatalEndpointError
from convdistill.teacher.operations import Operation, TeacherSettings
from convdistill.teacher.run import RunOptions, estimate_run, run_teacher, teacher_endpoint

OutOpt = Annotated[
    Path, typer.Option("--out", "-o", help="Output export (same format as the input; .gz to gzip).")
]
StrategyOpt = Annotated[
    str, typer.Option("--strategy", "-s", help=f"Which paths to work on: {', '.join(STRATEGIES)}.")
]
MaxTreesOpt = Annotated[
    int | None,
    typer.Option(
        "--max-trees",
        min=1,
        help="Work on the first N selected trees only; the others are copied through.",
    ),
]
BaseUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--base-url",
        help="OpenAI-compatible endpoint (e.g. "
        "http://localhost:8000/v1). Default: the embedded SmolLM2, served on 127.0.0.1 for the run.",
    ),
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="Teacher model name at the endpoint "
        "(required with --base-url). The API key comes from OPENAI_API_KEY.",
    ),
]
ConcurrencyOpt = Annotated[
    int, typer.Option("--concurrency", min=1, help="Requests in flight at once.")
]
TimeoutOpt = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        min=0.1,
        help="Seconds before a request is retried. Default: 120, or 900 for the embedded teacher "
        "(a small CPU model answering long conversations in a batch is slow; a retry only adds load).",
    ),
]
RetriesOpt = Annotated[int, typer.Option("--max-retries", min=0, help="Retries per request.")]
CacheOpt = Annotated[
    Path | None,
    typer.Option(
        "--cache", help="Request cache (SQLite). Default: $CONVDISTILL_HOME/teacher_cache.sqlite."
    ),
]
NoCacheOpt = Annotated[
    bool, typer.Option("--no-cache", help="Neither read nor write the cache (no resume).")
]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Say how many requests and tokens, send nothing.")
]
MaxRequestsOpt = Annotated[
    int | None, typer.Option("--max-requests", min=1, help="Stop cleanly after sending N.")
]
MaxTokensOpt = Annotated[
    int | None, typer.Option("--max-tokens", min=1, help="Stop cleanly after N tokens sent.")
]
PriceInOpt = Annotated[
    float, typer.Option("--price-in", help="Price per 1k prompt tokens, for the cost report.")
]
PriceOutOpt = Annotated[float, typer.Option("--price-out", help="Price per 1k completion tokens.")]
PromptsOpt = Annotated[
    Path | None,
    typer.Option(
        "--prompts-dir",
        file_okay=False,
        help="Folder whose prompt files "
        "(teacher_system.txt, simulator.txt, rank.txt, personas.txt, styles.txt) override ours.",
    ),
]
TemperatureOpt = Annotated[
    float, typer.Option("--temperature", min=0.0, help="Teacher sampling temperature.")
]
NewTokensOpt = Annotated[
    int, typer.Option("--max-new-tokens", min=1, help="Longest teacher answer, in tokens.")
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        "--threads",
        min=1,
        help="torch threads of the embedded teacher (no --base-url). On a machine shared with other "
        "jobs, fewer threads than cores avoids heavy slow-downs.",
    ),
]
BatchOutOpt = Annotated[
    Path | None,
    typer.Option(
        "--batch-out",
        dir_okay=False,
        help="Send nothing: write this round's unanswered requests as a batch file (OpenAI Batch / vLLM "
        "run-batch input). OUT is written once nothing is pending.",
    ),
]
BatchInOpt = Annotated[
    Path | None,
    typer.Option(
        "--batch-in",
        exists=True,
        dir_okay=False,
        help="A batch output file: its answers go into the request cache first (bad lines reported, "
        "their requests left pending).",
    ),
]
CreatedOpt = Annotated[
    str | None,
    typer.Option(
        "--created-date",
        help="Pin new messages' created_date "
        "(ISO 8601) for a reproducible export; default: when each answer arrived.",
    ),
]


TurnsOpt = Annotated[
    int, typer.Option("--turns", "-k", min=1, help="Simulated exchanges to add per path.")
]
AnswersOpt = Annotated[
    int, typer.Option("--answers", "-n", min=1, help="Teacher answers per user turn.")
]


def _run(
    operation: Operation,
    input_file: InputFile,
    out: OutOpt,
    strategy: StrategyOpt = "best",
    lang: LangOpt = None,
    tree_state: StateOpt = None,
    top_k: TopKOpt = None,
    drop_synthetic: DropSyntheticOpt = False,
    max_trees: MaxTreesOpt = None,
    base_url: BaseUrlOpt = None,
    model: ModelOpt = None,
    concurrency: ConcurrencyOpt = 8,
    timeout: TimeoutOpt = None,
    max_retries: RetriesOpt = 6,
    cache: CacheOpt = None,
    no_cache: NoCacheOpt = False,
    dry_run: DryRunOpt = False,
    max_requests: MaxRequestsOpt = None,
    max_tokens: MaxTokensOpt = None,
    price_in: PriceInOpt = 0.0,
    price_out: PriceOutOpt = 0.0,
    prompts_dir: PromptsOpt = None,
    threads: ThreadsOpt = None,
    batch_out: BatchOutOpt = None,
    batch_in: BatchInOpt = None,
    seed: SeedOpt = 0,
    temperature: TemperatureOpt = 0.7,
    max_new_tokens: NewTokensOpt = 256,
    created_date: CreatedOpt = None,
    on_error: OnErrorOpt = "skip",
    rejects: RejectsOpt = None,
    turns: TurnsOpt = 2,
    answers: AnswersOpt = 1,
) -> None:
    """One teacher operation over an export. Its parameters, in this order, are the options of
    `extend`, `regenerate` and `rank` (`_teacher_command` builds each command from them)."""
    check_choice(strategy, STRATEGIES, "--strategy")
    check_choice(on_error, ("skip", "fail"), "--on-error")
    if strategy == "top-k" and top_k is None:
        raise typer.BadParameter("strategy top-k needs --top-k K", param_hint="--strategy")
    selection = build_selection(lang, tree_state, top_k, drop_synthetic, min_assistant_turns=1)
    if operation != "rank":
        selection = replace(selection, min_assistant_turns=0)  # an unanswered prompt is work too
    settings = TeacherSettings(
        operation=operation,
        turns=turns,
        answers=answers,
        strategy=strategy,  # type: ignore[arg-type]
        selection=selection,
        seed=seed,
        temperature=temperature,
        max_tokens=max_new_tokens,
    )
    cache_path = None if no_cache else (cache or convdistill_home() / "teacher_cache.sqlite")
    log = RejectLog(rejects)
    options = RunOptions(
        max_trees=max_trees,
        cache_path=cache_path,
        created_date=created_date,
        prompts_dir=prompts_dir,
        on_error=on_error,  # type: ignore[arg-type]  # one of them: check_choice above
        on_reject=log,
        batch_in=batch_in,
        batch_out=batch_out,
    )
    # Bad input, a recipe that cannot run and a missing file reach the root command's
    # friendly_errors as one line; anything else there is a bug, with its traceback.
    try:
        if dry_run:
            err_console.print(estimate_run(input_file, settings, options).summary())
            return
        if base_url and not model:
            raise typer.BadParameter("--model is required with --base-url", param_hint="--model")
        serve = batch_out is None  # a --batch-out run sends nothing
        if not base_url and serve:
            if threads:
                import torch

                torch.set_num_threads(threads)
            err_console.print(
                "starting the embedded teacher (SmolLM2-135M-Instruct) on 127.0.0.1 ..."
            )
        with teacher_endpoint(base_url, model, serve) as (url, served_model):
            if timeout is None:
                timeout = 120.0 if base_url else 900.0
            endpoint = EndpointSettings(
                url,
                served_model,
                os.environ.get("OPENAI_API_KEY"),
                concurrency,
                timeout,
                max_retries,
            )
            with Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err_console,
                transient=True,
                disable=not err_console.is_terminal,
            ) as progress:
                task = progress.add_task(f"{operation} (trees)", total=None)
                report = run_teacher(
                    input_file,
                    out,
                    settings,
                    endpoint,
                    Budget(max_requests, max_tokens),
                    options,
                    progress=lambda n: progress.advance(task, n),
                )
        err_console.print(report.summary(price_in, price_out), markup=False)
    except FatalEndpointError as exc:
        fail(f"the endpoint refuses requests: {exc}")
    finally:
        log.close()


# Parameters of `_run` that are each a command's own option, placed right after OUT.
_OWN_OPTIONS = ("turns", "answers")


def _teacher_command(
    app: typer.Typer, own: tuple[str, ...] = (), fixed: dict[str, Any] | None = None
) -> Callable[[Callable[[], None]], None]:
    """Register a command named after the decorated function, with its docstring as help,
    whose options are `_run`'s: INPUT, OUT, then `own`, then the shared ones in `_run`'s order,
    less those `fixed` sets instead. The three teacher commands thus declare their ~30 shared
    options once, and `--help` lists them as before."""
    fixed = fixed or {}

    def register_command(described: Callable[[], None]) -> None:
        operation = described.__name__
        everything = inspect.signature(_run, eval_str=True).parameters
        head = [everything[name] for name in ("input_file", "out")]
        shared = [
            p
            for name, p in everything.items()
            if name not in ("operation", "input_file", "out", *_OWN_OPTIONS, *fixed)
        ]
        params = [*head, *(everything[name] for name in own), *shared]

        def command(**options: Any) -> None:
            _run(operation, **fixed, **options)  # type: ignore[arg-type]

        # typer reads a command's options from its signature and type hints.
        command.__signature__ = inspect.Signature(params, return_annotation=None)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
        command.__doc__ = described.__doc__
        command.__name__ = operation
        app.command(operation)(command)

    return register_command


teacher_app = typer.Typer(help="Teacher utilities: batch files.", no_args_is_help=True)
batch_app = typer.Typer(help="OpenAI Batch / vLLM run-batch files.", no_args_is_help=True)
teacher_app.add_typer(batch_app, name="batch")


@batch_app.command("run")
def batch_run(
    input_file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Batch input file (JSONL: "
                                               "custom_id, method, url, body), e.g. from --batch-out.")],
    output_file: Annotated[Path, typer.Argument(dir_okay=False, help="Batch output file to write (OpenAI's "
                                                "format: id, custom_id, response, error), in input order.")],
    model: Annotated[str, typer.Option("--model", "-m", help="A checkpoint folder or an embedded model "
                                       "name, served on 127.0.0.1 while the file runs.")],
    concurrency: ConcurrencyOpt = 8,
    threads: ThreadsOpt = None,
) -> None:
    """Run a batch file locally on any model `convdistill serve` serves: what OpenAI's Batch API or
    vLLM's run-batch do, for CPU users and tests.

    Example:
      convdistill extend in.jsonl -o out.jsonl --batch-out round1.jsonl
      convdistill teacher batch run round1.jsonl answers1.jsonl --model smollm2-135m-instruct
      convdistill extend in.jsonl -o out.jsonl --batch-in answers1.jsonl --batch-out round2.jsonl
    """
    from convdistill.teacher.batch import run_batch_file

    if threads:
        import torch

        torch.set_num_threads(threads)
    report = run_batch_file(input_file, output_file, model, concurrency)
    err_console.print(report.summary("requests run") + f"\nwrote {output_file}", markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(teacher_app, name="teacher")

    @_teacher_command(app, own=("turns",))
    def extend() -> None:
        """Continue conversations where humans stopped: a simulated user asks, the teacher answers.

        For each selected path (default: the best path of each tree), an unanswered user turn gets
        a teacher answer first; then up to K exchanges are added, or fewer if the simulated user
        ends the conversation. New messages are synthetic nodes with model_name = the teacher.

        Examples:
          convdistill extend export.jsonl -o extended.jsonl --turns 2 --max-trees 5
          convdistill extend export.jsonl.gz -o ext.jsonl.gz --base-url http://localhost:8000/v1 --model m
        """

    @_teacher_command(app, own=("answers",))
    def regenerate() -> None:
        """The teacher answers each user turn of the selected paths itself, as a new sibling of the
        human answers (sequence-level distillation over whole conversations).

        Example: convdistill regenerate export.jsonl -o regen.jsonl --strategy all --max-trees 10
        """

    # Ranking is greedy and short, and every reply group of a tree is looked at: no path
    # strategy, sampling or length options.
    @_teacher_command(
        app,
        fixed={
            "strategy": "all",
            "top_k": None,
            "temperature": 0.0,
            "max_new_tokens": 48,
            "created_date": None,
        },
    )
    def rank() -> None:
        """The teacher ranks sibling replies that have no human ranks (each gets `rank` and
        `ranked_by: <teacher>`), so preference pairs exist for teacher branches too.

        Example: convdistill regenerate export.jsonl -o r.jsonl -n 2 && convdistill rank r.jsonl -o ranked.jsonl
        """
