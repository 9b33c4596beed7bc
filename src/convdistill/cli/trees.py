"""`convdistill trees ...`: conversation trees from any source, written as Open-Assistant exports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from convdistill.cli.common import (
    OnErrorOpt,
    RejectLog,
    RejectsOpt,
    check_choice,
    err_console,
    print_report,
    read_progress,
)
from convdistill.conversation_trees.convert import convert_trees
from convdistill.conversation_trees.exports import ReadOptions
from convdistill.conversation_trees.redact import REDACT_KINDS, Redactor
from convdistill.errors import ConvdistillError

app = typer.Typer(
    help="Conversation trees from Open-Assistant, the Hub, ChatGPT, Open WebUI, LibreChat, "
    "Chatbot UI, TRL messages and ShareGPT files, as Open-Assistant exports.",
    no_args_is_help=True,
)

# Shared with `paths` and `pairs`: an input may be a folder (the Hub's layouts), and personal
# data can be replaced as it is read.
InputPath = Annotated[
    Path,
    typer.Argument(
        exists=True,
        readable=True,
        help="Open-Assistant JSONL (nested trees, message trees or flat messages, gz or not); the "
        "Hub's parquet (Open-Assistant messages, or chat datasets with a messages or conversations "
        "column; a file, a folder of them, or a save_to_disk folder); ChatGPT conversations.json; "
        "Open WebUI, LibreChat or Chatbot UI exports; TRL messages or ShareGPT records. Recognised "
        "by content.",
    ),
]
SplitOpt = Annotated[
    str | None,
    typer.Option("--split", help="Hub folders: read this split only (e.g. train); default: all."),
]
RedactOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--redact",
        help=f"Replace personal data in texts before anything is written: {', '.join(REDACT_KINDS)} "
        "(comma-separate or repeat).",
    ),
]
RedactPatternsOpt = Annotated[
    Path | None,
    typer.Option(
        "--redact-patterns",
        exists=True,
        dir_okay=False,
        help="A file of extra regular expressions (one a line) whose matches become [REDACTED].",
    ),
]


def build_redactor(kinds: list[str] | None, patterns: Path | None) -> Redactor | None:
    chosen = tuple(k.strip() for value in kinds or () for k in value.split(",") if k.strip())
    if not chosen and patterns is None:
        return None
    for kind in chosen:
        check_choice(kind, REDACT_KINDS, "--redact")
    try:
        return Redactor.from_options(chosen, patterns)
    except ConvdistillError as exc:  # an unknown kind, a pattern that is not a regular expression
        raise typer.BadParameter(str(exc), param_hint="--redact-patterns") from None


@app.command("convert")
def convert_command(
    input_path: InputPath,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output export: .jsonl or .jsonl.gz (gzip by name).")
    ],
    fmt: Annotated[
        str, typer.Option("--format", help="trees (nested, keeps chat provenance) or messages (flat).")
    ] = "trees",
    split: SplitOpt = None,
    redact: RedactOpt = None,
    redact_patterns: RedactPatternsOpt = None,
    rejects: RejectsOpt = None,
    on_error: OnErrorOpt = "skip",
) -> None:
    """Write any supported input as an Open-Assistant export, which every command reads.

    Examples:
      convdistill trees convert conversations.json -o chatgpt.jsonl --redact emails,phones,urls
      convdistill trees convert oasst2/data --split train -o oasst2_train.jsonl.gz
    """
    check_choice(fmt, ("trees", "messages"), "--format")
    check_choice(on_error, ("skip", "fail"), "--on-error")
    redactor = build_redactor(redact, redact_patterns)
    log = RejectLog(rejects)
    with read_progress("reading") as progress:
        try:
            report, lines = convert_trees(
                input_path,
                out,
                fmt=fmt,  # type: ignore[arg-type]
                read=ReadOptions(on_error, log, progress, split, redactor),  # type: ignore[arg-type]
            )
        finally:
            log.close()
    print_report(report)
    err_console.print(f"wrote {report.trees_kept} trees ({lines} lines, {fmt}) to {out}")
