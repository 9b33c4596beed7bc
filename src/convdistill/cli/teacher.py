"""`convdistill extend | regenerate | rank`: a teacher writes new nodes into the trees."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

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


def _run(
    operation: Operation,
    input_file: Path,
    out: Path,
    *,
    turns: int = 2,
    answers: int = 1,
    strategy: str = "all",
    lang,
    tree_state,
    top_k=None,
    drop_synthetic,
    max_trees,
    base_url,
    model,
    concurrency,
    timeout,
    max_retries,
    cache,
    no_cache,
    dry_run,
    max_requests,
    max_tokens,
    price_in,
    price_out,
    prompts_dir,
    seed,
    temperature: float = 0.0,
    max_new_tokens: int = 48,
    created_date=None,
    threads=None,
    batch_in=None,
    batch_out=None,
    on_error,
    rejects,
) -> None:
    check_choice(strategy, STRATEGIES, "--strategy")
    check_choice(on_error, ("skip", "fail"), "--on-error")
    if strategy == "top-k" and top_k is None:
        raise typer.BadParameter("strategy top-k needs --top-k K", param_hint="--strategy")
    selection = build_selection(lang, tree_state, top_k, drop_synthetic, min_assistant_turns=1)
    if operation != "rank":
        from dataclasses import replace

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
        on_error=on_error,
        on_reject=log,
        batch_in=batch_in,
        batch_out=batch_out,
    )  # type: ignore[arg-type]
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
    except (OSError, ValueError) as exc:
        fail(str(exc))
    finally:
        log.close()


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
    from convdistill.models import ModelNotAvailable
    from convdistill.teacher.batch import run_batch_file

    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        report = run_batch_file(input_file, output_file, model, concurrency)
    except (ModelNotAvailable, OSError, ValueError) as exc:
        fail(str(exc))
    err_console.print(report.summary("requests run") + f"\nwrote {output_file}", markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(teacher_app, name="teacher")

    @app.command("extend")
    def extend(
        input_file: InputFile,
        out: OutOpt,
        turns: Annotated[
            int, typer.Option("--turns", "-k", min=1, help="Simulated exchanges to add per path.")
        ] = 2,
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
    ) -> None:
        """Continue conversations where humans stopped: a simulated user asks, the teacher answers.

        For each selected path (default: the best path of each tree), an unanswered user turn gets
        a teacher answer first; then up to K exchanges are added, or fewer if the simulated user
        ends the conversation. New messages are synthetic nodes with model_name = the teacher.

        Examples:
          convdistill extend export.jsonl -o extended.jsonl --turns 2 --max-trees 5
          convdistill extend export.jsonl.gz -o ext.jsonl.gz --base-url http://localhost:8000/v1 --model m
        """
        _run("extend", **locals())  # every option of this command, by name

    @app.command("regenerate")
    def regenerate(
        input_file: InputFile,
        out: OutOpt,
        answers: Annotated[
            int, typer.Option("--answers", "-n", min=1, help="Teacher answers per user turn.")
        ] = 1,
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
    ) -> None:
        """The teacher answers each user turn of the selected paths itself, as a new sibling of the
        human answers (sequence-level distillation over whole conversations).

        Example: convdistill regenerate export.jsonl -o regen.jsonl --strategy all --max-trees 10
        """
        _run("regenerate", **locals())

    @app.command("rank")
    def rank(
        input_file: InputFile,
        out: OutOpt,
        lang: LangOpt = None,
        tree_state: StateOpt = None,
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
        on_error: OnErrorOpt = "skip",
        rejects: RejectsOpt = None,
    ) -> None:
        """The teacher ranks sibling replies that have no human ranks (each gets `rank` and
        `ranked_by: <teacher>`), so preference pairs exist for teacher branches too.

        Example: convdistill regenerate export.jsonl -o r.jsonl -n 2 && convdistill rank r.jsonl -o ranked.jsonl
        """
        # Ranking is greedy and short; every reply group of a tree is looked at.
        _run("rank", **locals())
