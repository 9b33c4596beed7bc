"""Options and plumbing shared by the CLI commands: filters, reading, progress, errors.

Exit codes for every command: 0 done, 1 failed (bad input under --on-error fail, a recipe that
cannot run, an unreachable endpoint, unwritable output, ...: one line; or a bug: its traceback
and a line saying so), 2 usage error (unknown option, missing file; typer's own).
"""

from __future__ import annotations

import contextlib
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Annotated, Any, NoReturn

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn
from typer.core import TyperGroup
from typer.exceptions import TyperException

from convdistill.conversation_trees.ingest_report import IngestReport, InputError, Reject
from convdistill.conversation_trees.scoring import ScoreWeights
from convdistill.conversation_trees.selection import Selection
from convdistill.errors import ConvdistillError

err_console = Console(stderr=True, highlight=False, soft_wrap=True)  # summaries stay one line


def _check_precision(value: str) -> str:
    from convdistill.precision import PRECISIONS

    if value not in PRECISIONS:
        raise typer.BadParameter(f"{value!r}: choose {', '.join(PRECISIONS)}")
    return value


# `--precision` of the commands that run a model (serve, eval run)
PRECISION_OPTION = typer.Option(
    "--precision", callback=_check_precision,
    help="auto: bf16 autocast where the hardware has bf16 units (AVX512-BF16 or AMX, a GPU), fp32 elsewhere; "
    "bf16 or fp32 to choose.")

# -- options used by several commands ---------------------------------------------------------
InputFile = Annotated[
    Path,
    typer.Argument(
        exists=True,
        dir_okay=False,
        readable=True,
        help="Open-Assistant export: nested trees or flat messages JSONL, gzipped or not.",
    ),
]
LangOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--lang",
        "-l",
        help="Keep trees whose prompt language starts with this code "
        "(pt matches pt-BR). Repeat or comma-separate for several.",
    ),
]
StateOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--tree-state",
        help="Keep trees in this state (repeatable; 'any' for all). Default: ready_for_export.",
    ),
]
TopKOpt = Annotated[
    int | None, typer.Option("--top-k", min=1, help="Keep only assistant replies of rank < K.")
]
DropSyntheticOpt = Annotated[
    bool,
    typer.Option(
        "--drop-synthetic",
        help="Drop synthetic (e.g. teacher-written) messages and their replies. Kept by default.",
    ),
]
ReviewOpt = Annotated[
    str,
    typer.Option(
        "--review",
        help="not-failed: drop messages whose review failed; "
        "passed: keep only reviewed-and-passed ones; any: no review filter.",
    ),
]
MinTurnsOpt = Annotated[
    int, typer.Option("--min-assistant-turns", min=1, help="Drop paths with fewer assistant turns.")
]
MaxTurnsOpt = Annotated[
    int | None,
    typer.Option("--max-assistant-turns", min=1, help="Drop paths with more assistant turns."),
]
MinLabelOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--min-label",
        help="LABEL=VALUE: every assistant turn of a "
        "path needs this label >= VALUE (e.g. quality=0.5).",
    ),
]
MaxLabelOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--max-label",
        help="LABEL=VALUE: no assistant turn may have this label > VALUE (e.g. toxicity=0.3).",
    ),
]
LabelWeightOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--label-weight",
        help="LABEL=WEIGHT added to each turn's score (e.g. quality=1 toxicity=-1).",
    ),
]
EmojiWeightOpt = Annotated[
    float, typer.Option("--emoji-weight", help="Weight of (+1 - -1 emojis) in each turn's score.")
]
OnErrorOpt = Annotated[
    str,
    typer.Option(
        "--on-error", help="skip: report bad records and go on; fail: stop at the first (exit 1)."
    ),
]
RejectsOpt = Annotated[
    Path | None,
    typer.Option(
        "--rejects",
        dir_okay=False,
        help="Write each rejected record (file, line, tree, message, reason) to this JSONL file.",
    ),
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for sampling and splits.")]
# Where `paths export` and `pairs export` write their records, and in which format.
RecordsOutOpt = Annotated[
    Path,
    typer.Option(
        "--out",
        "-o",
        help="Output: .jsonl[.gz], .parquet, or a folder (Hugging Face datasets save_to_disk).",
    ),
]
RecordsFormatOpt = Annotated[
    str | None,
    typer.Option("--format", help="jsonl, parquet or datasets (default: from the output name)."),
]


def split_multi(values: list[str] | None) -> tuple[str, ...]:
    """Repeated and comma-separated values, in order: ['en,de', 'fr'] -> ('en', 'de', 'fr')."""
    out: list[str] = []
    for value in values or ():
        out.extend(v.strip() for v in value.split(",") if v.strip())
    return tuple(out)


def parse_assignments(values: list[str] | None, option: str) -> dict[str, float]:
    result: dict[str, float] = {}
    for item in split_multi(values):
        name, sep, number = item.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            result[name] = float(number)
        except ValueError:
            raise typer.BadParameter(
                f"expected LABEL=NUMBER, got {item!r}", param_hint=option
            ) from None
    return result


def build_selection(
    lang: list[str] | None = None,
    tree_state: list[str] | None = None,
    top_k: int | None = None,
    drop_synthetic: bool = False,
    review: str = "not-failed",
    min_assistant_turns: int = 1,
    max_assistant_turns: int | None = None,
    min_label: list[str] | None = None,
    max_label: list[str] | None = None,
) -> Selection:
    if review not in ("not-failed", "passed", "any"):
        raise typer.BadParameter("choose not-failed, passed or any", param_hint="--review")
    states = split_multi(tree_state)
    if "any" in states:
        states = ()
    elif not states:
        states = ("ready_for_export",)
    return Selection(
        tree_states=states,
        langs=split_multi(lang),
        drop_synthetic=drop_synthetic,
        review=review,  # type: ignore[arg-type]
        top_k=top_k,
        min_assistant_turns=min_assistant_turns,
        max_assistant_turns=max_assistant_turns,
        min_labels=parse_assignments(min_label, "--min-label"),
        max_labels=parse_assignments(max_label, "--max-label"),
    )


def build_weights(label_weight: list[str] | None, emoji_weight: float) -> ScoreWeights:
    return ScoreWeights(
        labels=parse_assignments(label_weight, "--label-weight"), emojis=emoji_weight
    )


def check_choice(value: str, choices: tuple[str, ...], option: str) -> str:
    if value not in choices:
        raise typer.BadParameter(f"choose one of {', '.join(choices)}", param_hint=option)
    return value


class RejectLog:
    """Receives rejects: writes them to a JSONL file if asked, shows the first few on stderr."""

    SHOW = 20

    def __init__(self, path: Path | None):
        self.path = path
        self.stream: IO[bytes] | None = None
        self.shown = 0
        self.total = 0

    def __call__(self, reject: Reject) -> None:
        self.total += 1
        if self.path is not None:
            if self.stream is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.stream = open(self.path, "wb")  # noqa: SIM115 - closed in close()
            self.stream.write(orjson.dumps(reject.to_dict()) + b"\n")
        if self.shown < self.SHOW:
            self.shown += 1
            err_console.print(
                f"[yellow]rejected[/] {escape(reject.describe())}", markup=True, soft_wrap=True
            )

    def close(self) -> None:
        if self.path is not None and self.stream is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_bytes(b"")  # an empty rejects file says: nothing was rejected
        if self.stream is not None:
            self.stream.close()
        hidden = self.total - self.shown
        if hidden > 0:
            where = f"all in {self.path}" if self.path else "use --rejects FILE to keep them all"
            err_console.print(f"... and {hidden} more rejected records ({where})")


@contextlib.contextmanager
def read_progress(label: str) -> Iterator[Callable[[int, int], None] | None]:
    """A byte-based progress bar on stderr when it is a terminal; nothing otherwise."""
    if not sys.stderr.isatty():
        yield None
        return
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    ) as progress:
        task = progress.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield update


def print_report(report: IngestReport) -> None:
    err_console.print(report.summary(), highlight=False, markup=False)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one error line and exit. The message is printed as it is: brackets in a file name
    or a quoted input are not rich markup."""
    err_console.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


BUG_REPORT = (
    "this is a bug in convdistill (or a library under it), not a problem with your input: "
    "please report it with the traceback above and the command you ran"
)


@contextlib.contextmanager
def friendly_errors() -> Iterator[None]:
    """Expected failures (`convdistill.errors`: bad input, bad recipe, unavailable resource) as
    one line and exit 1; so is a file the system refuses (missing, unreadable, disk full), which
    names the file. Anything else is a bug: its traceback, a line saying so, exit 1."""
    try:
        yield
    except (typer.Exit, typer.Abort, TyperException):
        raise  # typer's own exits and usage errors (also Exceptions) are handled by typer
    except InputError as exc:
        fail(f"bad input (--on-error fail): {exc}")
    except ConvdistillError as exc:
        fail(str(exc))
    except OSError as exc:
        if exc.filename is None:  # not about a file: a socket, a library's own I/O
            report_bug()
        fail(f"{exc.filename}: {exc.strerror or exc}")
    except Exception:
        report_bug()


class FriendlyGroup(TyperGroup):
    """The root command group: every command runs inside `friendly_errors`, so whichever
    command raises, an expected failure prints one line and anything else a bug report."""

    def invoke(self, ctx: Any) -> Any:  # typer's (vendored) click Context
        with friendly_errors():
            return super().invoke(ctx)


def report_bug() -> NoReturn:
    """Print the exception being handled with its traceback and the line asking for a report."""
    traceback.print_exc()
    err_console.print(f"[red]error:[/] {BUG_REPORT}", soft_wrap=True)
    raise typer.Exit(1)


def dump_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
