"""`convdistill paths ...`: statistics, samples and exports of ranked dialog paths."""

from __future__ import annotations

from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from convdistill.cli.common import (
    DropSyntheticOpt,
    EmojiWeightOpt,
    LabelWeightOpt,
    LangOpt,
    MaxLabelOpt,
    MaxTurnsOpt,
    MinLabelOpt,
    MinTurnsOpt,
    OnErrorOpt,
    RecordsFormatOpt,
    RecordsOutOpt,
    RejectLog,
    RejectsOpt,
    ReviewOpt,
    SeedOpt,
    StateOpt,
    TopKOpt,
    build_selection,
    build_weights,
    check_choice,
    dump_json,
    err_console,
    print_report,
    read_progress,
)
from convdistill.cli.trees import InputPath, RedactOpt, RedactPatternsOpt, build_redactor
from convdistill.conversation_trees.exports import ReadOptions, export_paths, sample_paths
from convdistill.conversation_trees.paths import STRATEGIES, DialogPath
from convdistill.conversation_trees.readers import TreeReader
from convdistill.conversation_trees.record_output import OUTPUT_FORMATS
from convdistill.conversation_trees.records import CHAT_ROLE, path_record
from convdistill.conversation_trees.stats import collect_stats

app = typer.Typer(
    help="Ranked dialog paths (SFT data) from conversation trees.", no_args_is_help=True
)
console = Console(highlight=False)

HubSplitOpt = Annotated[
    str | None,
    typer.Option("--hub-split", help="Hub folders: read this split only (e.g. train); default: all."),
]
StrategyOpt = Annotated[
    str, typer.Option("--strategy", "-s", help=f"Path strategy: {', '.join(STRATEGIES)}.")
]


@app.command("stats")
def stats_command(
    input_file: InputPath,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    lang: LangOpt = None,
    tree_state: StateOpt = None,
    on_error: OnErrorOpt = "skip",
    rejects: RejectsOpt = None,
) -> None:
    """Trees and messages by language and state, ranked fraction, depth and branching
    histograms, and how many paths each strategy gives (under the given filters).

    Example: convdistill paths stats conversation_trees/oasst_en_100_tree.jsonl --json
    """
    check_choice(on_error, ("skip", "fail"), "--on-error")
    selection = build_selection(lang, tree_state)
    log = RejectLog(rejects)
    with read_progress("reading") as progress:
        reader = TreeReader(input_file, on_error=on_error, on_reject=log, progress=progress)  # type: ignore[arg-type]
        try:
            stats = collect_stats(reader, selection)
        finally:
            log.close()
    data = stats.to_dict()
    data["read"] = {
        "records_read": reader.report.records_read,
        "records_kept": reader.report.records_kept,
        "records_rejected": reader.report.records_rejected,
        "format": reader.report.format,
    }
    if as_json:
        dump_json(data)
    else:
        _print_stats(data)
    print_report(reader.report)


def _print_stats(data: dict) -> None:
    console.print(
        f"[bold]{data['trees']}[/] trees, [bold]{data['messages']}[/] messages "
        f"({', '.join(f'{v} {k}' for k, v in data['roles'].items())}); "
        f"{data['assistants_ranked']} assistant replies ranked ({data['ranked_fraction']:.1%}); "
        f"{data['synthetic']} synthetic, {data['deleted']} deleted"
    )
    for title, key in (
        ("trees by language", "trees_by_lang"),
        ("trees by state", "trees_by_state"),
    ):
        table = Table(title=title, title_justify="left")
        table.add_column(title.split()[-1])
        table.add_column("trees", justify="right")
        for name, n in list(data[key].items())[:15]:
            table.add_row(name, str(n))
        console.print(table)
    for title, key in (
        ("depth (messages on the longest thread)", "depth_histogram"),
        ("branching (replies per answered message)", "branching_histogram"),
    ):
        table = Table(title=title, title_justify="left")
        table.add_column("value", justify="right")
        table.add_column("count", justify="right")
        table.add_column("")
        peak = max(data[key].values(), default=1)
        for value, n in data[key].items():
            table.add_row(value, str(n), "#" * max(1, round(30 * n / peak)))
        console.print(table)
    table = Table(title="paths per strategy (after filters)", title_justify="left")
    table.add_column("strategy")
    table.add_column("paths", justify="right")
    for name, n in data["paths_per_strategy"].items():
        table.add_row(name, str(n))
    table.add_row("ranked prefixes (pairs)", str(data["ranked_prefixes"]))
    console.print(table)


@app.command("sample")
def sample_command(
    input_file: InputPath,
    n: Annotated[int, typer.Option("-n", min=1, help="How many paths to draw.")] = 5,
    strategy: StrategyOpt = "all",
    seed: SeedOpt = 0,
    temperature: Annotated[
        float, typer.Option(min=0.01, help="Sampling temperature on scores.")
    ] = 1.0,
    lang: LangOpt = None,
    tree_state: StateOpt = None,
    top_k: TopKOpt = None,
    drop_synthetic: DropSyntheticOpt = False,
    fmt: Annotated[
        str, typer.Option("--format", help="pretty (a terminal view) or jsonl.")
    ] = "pretty",
    on_error: OnErrorOpt = "skip",
) -> None:
    """Draw N paths, weighted by score, and show them turn by turn with roles and ranks.

    Example: convdistill paths sample conversation_trees/oasst_en_100_tree.jsonl -n 3 --seed 1
    """
    check_choice(strategy, STRATEGIES, "--strategy")
    check_choice(fmt, ("pretty", "jsonl"), "--format")
    check_choice(on_error, ("skip", "fail"), "--on-error")
    selection = build_selection(lang, tree_state, top_k, drop_synthetic)
    if strategy == "top-k" and top_k is None:
        raise typer.BadParameter("strategy top-k needs --top-k K", param_hint="--strategy")
    log = RejectLog(None)
    with read_progress("reading") as progress:
        read = ReadOptions(on_error, log, progress)  # type: ignore[arg-type]
        paths, report = sample_paths(
            input_file,
            n,
            selection=selection,
            strategy=strategy,  # type: ignore[arg-type]
            seed=seed,
            temperature=temperature,
            read=read,
        )
        log.close()
    if fmt == "jsonl":
        for path in paths:
            typer.echo(orjson.dumps(path_record(path)).decode())
    else:
        for i, path in enumerate(paths, 1):
            _print_path(i, path)
    print_report(report)


def _print_path(index: int, path: DialogPath) -> None:
    record = path_record(path)
    console.rule(
        f"path {index}: tree {record['tree_id']}  score {path.score:.3f}  "
        f"{path.assistant_turns} assistant turns  lang {record['lang']}"
    )
    for msg in path.messages:
        role = CHAT_ROLE[msg["role"]]
        tags = []
        if msg.get("rank") is not None:
            tags.append(f"rank {msg['rank']}")
        if msg.get("synthetic"):
            tags.append(f"synthetic {msg.get('model_name') or ''}".strip())
        style = "cyan" if role == "user" else "green"
        head = f"[bold {style}]{role}[/]" + (f" [dim]({', '.join(tags)})[/]" if tags else "")
        console.print(head)
        console.print(msg["text"], markup=False)
        console.print()


@app.command("export")
def export_command(
    input_file: InputPath,
    out: RecordsOutOpt,
    strategy: StrategyOpt = "all",
    top_k: TopKOpt = None,
    lang: LangOpt = None,
    tree_state: StateOpt = None,
    drop_synthetic: DropSyntheticOpt = False,
    review: ReviewOpt = "not-failed",
    min_assistant_turns: MinTurnsOpt = 1,
    max_assistant_turns: MaxTurnsOpt = None,
    min_label: MinLabelOpt = None,
    max_label: MaxLabelOpt = None,
    label_weight: LabelWeightOpt = None,
    emoji_weight: EmojiWeightOpt = 0.0,
    oasst_compat: Annotated[
        bool,
        typer.Option(
            "--oasst-compat",
            help="Open-Assistant's own SFT "
            "selection, exactly (their load_oasst_export; language: exact match, default en).",
        ),
    ] = False,
    n: Annotated[
        int, typer.Option("-n", min=1, help="Paths to draw with --strategy sample.")
    ] = 1000,
    split: Annotated[
        float | None,
        typer.Option(
            "--split",
            min=0.0,
            max=0.99,
            help="Fraction of trees for a validation split (by tree: no tree on both sides).",
        ),
    ] = None,
    seed: SeedOpt = 0,
    fmt: RecordsFormatOpt = None,
    rejects: RejectsOpt = None,
    on_error: OnErrorOpt = "skip",
    hub_split: HubSplitOpt = None,
    redact: RedactOpt = None,
    redact_patterns: RedactPatternsOpt = None,
) -> None:
    """Write ranked dialog paths as chat records (TRL's conversational format).

    Examples:
      convdistill paths export export.jsonl.gz -o paths.jsonl --lang en,de --split 0.05
      convdistill paths export export.jsonl --oasst-compat --top-k 1 -o oa_sft.jsonl
      convdistill paths export oasst2/data --hub-split train -o paths.jsonl
      convdistill paths export conversations.json --strategy best --redact emails,phones,urls -o mine.jsonl
    """
    check_choice(strategy, STRATEGIES, "--strategy")
    check_choice(on_error, ("skip", "fail"), "--on-error")
    if fmt is not None:
        check_choice(fmt, OUTPUT_FORMATS, "--format")
    if strategy == "top-k" and top_k is None:
        raise typer.BadParameter("strategy top-k needs --top-k K", param_hint="--strategy")
    selection = build_selection(
        lang,
        tree_state,
        top_k,
        drop_synthetic,
        review,
        min_assistant_turns,
        max_assistant_turns,
        min_label,
        max_label,
    )
    redactor = build_redactor(redact, redact_patterns)
    log = RejectLog(rejects)
    with read_progress("reading") as progress:
        try:
            summary = export_paths(
                input_file,
                out,
                selection=selection,
                strategy=strategy,  # type: ignore[arg-type]
                weights=build_weights(label_weight, emoji_weight),
                oasst_compat=oasst_compat,
                validation_fraction=split,
                seed=seed,
                sample_n=n,
                fmt=fmt,  # type: ignore[arg-type]
                read=ReadOptions(on_error, log, progress, hub_split, redactor),  # type: ignore[arg-type]
            )
        finally:
            log.close()
    print_report(summary.report)
    err_console.print(summary.summary())
