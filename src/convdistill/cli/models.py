"""`convdistill models`: list the embedded models, prepare (convert) one, init a tiny student."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from convdistill.cli.common import check_choice, dump_json, err_console, fail
from convdistill.models import FAMILIES, SIZES, convdistill_home

app = typer.Typer(
    help="Embedded models (converted once into CONVDISTILL_HOME) and students: built from a "
    "teacher's layers or random-initialised.",
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
    if not model.is_prepared() or force:
        err_console.print(f"converting {name} into {model.folder()} (about half a minute) ...")
    folder = model.prepare(force)  # a missing wheel: ModelNotAvailable, one line
    typer.echo(str(folder))


@app.command("init")
def init(
    family: Annotated[str, typer.Option("--family", help="t5 (encoder-decoder) or llama "
                                        "(decoder-only).")],
    output: Annotated[Path, typer.Option("--output", "-o", file_okay=False,
                                         help="New (or empty) folder for the checkpoint.")],
    teacher: Annotated[str | None, typer.Option(
        "--from", help="Build the student from this teacher's weights: an embedded name "
        "(smollm2-135m-instruct) or a Llama-family checkpoint folder. Without it the student "
        "is random-initialised (--size).")] = None,
    layers: Annotated[int | None, typer.Option(
        "--layers", min=1, help="With --from: teacher layers the student keeps (T5: in its "
        "decoder), those of highest block influence on --sample.")] = None,
    keep: Annotated[str | None, typer.Option(
        "--keep", help="With --from: exactly these teacher layers, e.g. 0,4,8 (overrides "
        "--layers).")] = None,
    encoder_layers: Annotated[int | None, typer.Option(
        "--encoder-layers", min=1, help="With --from --family t5: encoder layers (default: as "
        "many as the decoder).")] = None,
    encoder_keep: Annotated[str | None, typer.Option(
        "--encoder-keep", help="With --from --family t5: exactly these teacher layers in the "
        "encoder.")] = None,
    sample: Annotated[Path | None, typer.Option(
        "--sample", exists=True, dir_okay=False, help="With --from: conversations (a tree "
        "export or path records) to measure layers on. Default: the bundled sample.")] = None,
    sample_size: Annotated[int, typer.Option(
        "--sample-size", min=1, help="With --from: conversations of --sample to measure on.")] = 16,
    random_init: Annotated[bool, typer.Option(
        "--random-init", help="With --from: the same shape with random weights (a control).")
    ] = False,
    mlp_channels: Annotated[int | None, typer.Option(
        "--mlp-channels", min=1, help="With --from --family llama: width pruning; MLP channels every "
        "layer keeps (SmolLM2: 1536), those most active on --sample.")] = None,
    heads: Annotated[int | None, typer.Option(
        "--heads", min=1, help="With --from --family llama: width pruning; attention heads every layer "
        "keeps (SmolLM2: 9 in 3 key/value groups), a multiple of the key/value heads kept.")] = None,
    kv_heads: Annotated[int | None, typer.Option(
        "--kv-heads", min=1, help="With --heads: key/value heads (whole groups) every layer keeps "
        "(default: all of the teacher's).")] = None,
    architecture: Annotated[str, typer.Option(
        "--architecture", help="With --from --family t5: t5gemma (two embedding tables, cross-attention "
        "started from self-attention) or t5gemma2 (one embedding table, merged attention; its encoder "
        "holds the teacher's first --encoder-layers layers).")] = "t5gemma",
    size: Annotated[str, typer.Option("--size", help="Without --from: tiny (~5M parameters) or "
                                      "small (~28-33M) with SmolLM2's vocabulary.")] = "tiny",
    tokenizer: Annotated[Path | None, typer.Option(
        "--tokenizer", help="Without --from: a tokenizer folder, or a JSONL export / path-records "
        "file to train a BPE tokenizer on. Default: SmolLM2's, shared with the embedded "
        "teacher.")] = None,
    vocab_size: Annotated[int, typer.Option("--vocab-size", min=300,
                                            help="Vocabulary of a trained tokenizer.")] = 8000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random weights.")] = 0,
) -> None:
    """Build a student with a TRL-ready chat template and save it to -o DIR: from a teacher's
    layers (--from) or random-initialised."""
    from convdistill.models import init_student
    from convdistill.models.from_teacher import init_from_teacher

    check_choice(family, FAMILIES, "--family")
    width = mlp_channels is not None or heads is not None or kv_heads is not None
    if teacher is None:
        if (layers or keep or encoder_layers or encoder_keep or sample or random_init or width
                or architecture != "t5gemma"):
            fail("--layers, --keep, --encoder-layers, --encoder-keep, --sample, --random-init, "
                 "--mlp-channels, --heads, --kv-heads and --architecture need --from TEACHER")
        check_choice(size, SIZES, "--size")
    elif layers is None and keep is None and not width:
        fail("--from needs --layers N or --keep I,J,... (depth), or --mlp-channels / --heads (width)")
    if teacher is None:
        info = init_student(family, size, output, tokenizer=tokenizer,
                            vocab_size=vocab_size, seed=seed)
        typer.echo(f"{info.path}: {family}-{size}, {info.parameters:,} parameters, "
                   f"vocabulary {info.vocab_size:,}")
        return
    err_console.print(f"building a {family} student from {teacher} (measuring layers on "
                      "the sample, about a minute) ...")
    built = init_from_teacher(
        teacher, family, output, layers=layers, keep=_layer_list(keep, "--keep"),
        encoder_layers=encoder_layers,
        encoder_keep=_layer_list(encoder_keep, "--encoder-keep"), sample=sample,
        sample_size=sample_size, random_init=random_init, seed=seed, mlp_channels=mlp_channels,
        heads=heads, kv_heads=kv_heads, architecture=architecture)
    typer.echo(f"{built.path}: {family} from {teacher}, {built.parameters:,} parameters, {built.layout()}"
               + (" (random weights)" if random_init else ""))


def _layer_list(text: str | None, option: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        fail(f"{option} {text!r}: expected layer numbers separated by commas, e.g. 0,4,8")
