"""`convdistill pairs ...`: ranked sibling pairs (DPO data) from conversation trees."""

from __future__ import annotations

from typing import Annotated

import typer

from convdistill.cli.common import (
    DropSyntheticOpt,
    LangOpt,
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
    check_choice,
    err_console,
    print_report,
    read_progress,
)
from convdistill.cli.paths import HubSplitOpt
from convdistill.cli.trees import InputPath, RedactOpt, RedactPatternsOpt, build_redactor
from convdistill.conversation_trees.exports import ReadOptions, export_pairs
from convdistill.conversation_trees.pairs import PAIRINGS
from convdistill.conversation_trees.record_output import OUTPUT_FORMATS

app = typer.Typer(
    help="Ranked sibling pairs (DPO data) from conversation trees.", no_args_is_help=True
)


@app.command("export")
def export_command(
    input_file: InputPath,
    out: RecordsOutOpt,
    pairing: Annotated[str, typer.Option("--pairing", help=f"{', '.join(PAIRINGS)}.")] = "all",
    top_k: TopKOpt = None,
    lang: LangOpt = None,
    tree_state: StateOpt = None,
    drop_synthetic: DropSyntheticOpt = False,
    review: ReviewOpt = "not-failed",
    oasst_compat: Annotated[
        bool,
        typer.Option(
            "--oasst-compat",
            help="Open-Assistant's own RM "
            "selection, exactly (prefixes with two or more ranked replies).",
        ),
    ] = False,
    split: Annotated[
        float | None,
        typer.Option(
            "--split", min=0.0, max=0.99, help="Fraction of trees for a validation split (by tree)."
        ),
    ] = None,
    seed: SeedOpt = 0,
    fmt: RecordsFormatOpt = None,
    rejects: RejectsOpt = None,
    on_error: OnErrorOpt = "skip",
    rank_shown_branch: Annotated[
        bool,
        typer.Option(
            "--rank-shown-branch",
            help="Chat exports: among regenerated replies no one ranked, rank the one on the branch "
            "the interface showed first (pairs marked ranked_by: shown-branch).",
        ),
    ] = False,
    hub_split: HubSplitOpt = None,
    redact: RedactOpt = None,
    redact_patterns: RedactPatternsOpt = None,
) -> None:
    """Write preference pairs in TRL's conversational format: the multi-turn prompt up to a
    user message, and a better ("chosen") and worse ("rejected") ranked reply.

    Examples:
      convdistill pairs export export.jsonl -o pairs.jsonl --pairing adjacent
      convdistill pairs export export.jsonl --oasst-compat --pairing all -o oa_rm.parquet
      convdistill pairs export conversations.json --rank-shown-branch -o chatgpt_pairs.jsonl
    """
    check_choice(pairing, PAIRINGS, "--pairing")
    check_choice(on_error, ("skip", "fail"), "--on-error")
    if fmt is not None:
        check_choice(fmt, OUTPUT_FORMATS, "--format")
    selection = build_selection(lang, tree_state, top_k, drop_synthetic, review)
    redactor = build_redactor(redact, redact_patterns)
    log = RejectLog(rejects)
    with read_progress("reading") as progress:
        try:
            summary = export_pairs(
                input_file,
                out,
                selection=selection,
                pairing=pairing,  # type: ignore[arg-type]
                oasst_compat=oasst_compat,
                validation_fraction=split,
                seed=seed,
                fmt=fmt,  # type: ignore[arg-type]
                read=ReadOptions(on_error, log, progress, hub_split, redactor),  # type: ignore[arg-type]
                shown_branch_ranks=rank_shown_branch,
            )
        finally:
            log.close()
    print_report(summary.report)
    err_console.print(summary.summary())
