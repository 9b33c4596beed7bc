"""`convdistill models`: list the embedded models, prepare (convert) one, init a tiny student."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from convdistill.cli.common import check_choice, dump_json, err_console, fail, friendly_errors
from convdistill.models import FAMILIES, SIZES, ModelNotAvailable, convdistill_home

app = typer.Typer(
    help="Embedded models (converted once into CONVDISTILL_HOME) and tiny random students.",
    no_args_is_help=True,
)


@app.command("list")
def list_models(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """The embedded models, whether their source is installed and whether they are converted."""
    from convdistill.models import model_table

    rows = model_table()
    if as_json:
        dump_json({"home": str(convdistill_home()), "models": rows,
                   "students": {"families": FAMILIES, "sizes": SIZES}})
        return
    for row in rows:
        state = "prepared" if row["prepared"] else (
            "not prepared" if row["source_installed"] else "source missing")
        typer.echo(f"{row['name']}  {row['parameters'] / 1e6:.1f}M  {row['license']}  [{state}]")
        typer.echo(f"    {row['description']}")
        typer.echo(f"    source: {row['source']}")
        typer.echo(f"    folder: {row['folder']}")
        if "problem" in row:
            typer.echo(f"    problem: {row['problem']}")
    typer.echo(f"students (convdistill models init): families {', '.join(FAMILIES)}; "
               f"sizes {', '.join(SIZES)}")


@app.command("prepare")
def prepare(
    name: Annotated[str, typer.Argument(help="An embedded model name (see `models list`).")],
    force: Annotated[bool, typer.Option("--force", help="Convert again even if cached.")] = False,
) -> None:
    """Convert an embedded model once into a plain checkpoint; print its folder."""
    from convdistill.models import EMBEDDED

    model = EMBEDDED.get(name)
    if model is None:
        fail(f"unknown model {name!r}; embedded models: {', '.join(EMBEDDED)}")
        return
    if not model.is_prepared() or force:
        err_console.print(f"converting {name} into {model.folder()} (about half a minute) ...")
    with friendly_errors():
        try:
            folder = model.prepare(force)
        except ModelNotAvailable as exc:
            fail(str(exc))
            return
    typer.echo(str(folder))


@app.command("init")
def init(
    family: Annotated[str, typer.Option("--family", help="t5 (encoder-decoder) or llama "
                                        "(decoder-only).")],
    output: Annotated[Path, typer.Option("--output", "-o", file_okay=False,
                                         help="New (or empty) folder for the checkpoint.")],
    size: Annotated[str, typer.Option("--size", help="tiny (~5M parameters) or small "
                                      "(~28-33M) with SmolLM2's vocabulary.")] = "tiny",
    tokenizer: Annotated[Path | None, typer.Option(
        "--tokenizer", help="A tokenizer folder, or a JSONL export / path-records file to train "
        "a BPE tokenizer on. Default: SmolLM2's, shared with the embedded teacher.")] = None,
    vocab_size: Annotated[int, typer.Option("--vocab-size", min=300,
                                            help="Vocabulary of a trained tokenizer.")] = 8000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random weights.")] = 0,
) -> None:
    """Build a random-initialised student with a TRL-ready chat template; save it to -o DIR."""
    from convdistill.models import init_student

    check_choice(family, FAMILIES, "--family")
    check_choice(size, SIZES, "--size")
    with friendly_errors():
        try:
            info = init_student(family, size, output, tokenizer=tokenizer,
                                vocab_size=vocab_size, seed=seed)
        except ModelNotAvailable as exc:
            fail(str(exc))
            return
    typer.echo(f"{info.path}: {family}-{size}, {info.parameters:,} parameters, "
               f"vocabulary {info.vocab_size:,}")
