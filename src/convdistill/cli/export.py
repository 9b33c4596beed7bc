"""`convdistill export`: students as files other runtimes run (GGUF for llama.cpp and Ollama)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from convdistill.cli.common import check_choice, err_console
from convdistill.export.gguf_file import GGUF_TYPES

app = typer.Typer(help="Export a student for other runtimes: GGUF for llama.cpp, Ollama, "
                  "LM Studio.", no_args_is_help=True)


@app.command("gguf")
def gguf_command(
    checkpoint: Annotated[str, typer.Argument(help="A student checkpoint folder (Llama or T5) or "
                                              "an embedded model name (smollm2-135m-instruct).")],
    output: Annotated[Path, typer.Option("--output", "-o",
                                         help="The .gguf file to write (replaced if it exists).")],
    type_name: Annotated[str, typer.Option(
        "--type", help="f32, f16, q8_0 (written by gguf-py) or q4_k_m (quantised by llama.cpp "
        "through llama-cpp-python, which must be installed).")] = "f16",
    modelfile: Annotated[bool, typer.Option(
        "--modelfile/--no-modelfile", help="Also write an Ollama Modelfile beside the file "
        "(decoder-only students).")] = True,
    threads: Annotated[int | None, typer.Option("--threads", min=1,
                                                help="Threads for q4_k_m quantisation.")] = None,
) -> None:
    """Write CHECKPOINT as one GGUF file (tensors, hyper-parameters, tokenizer, chat template)."""
    from convdistill.export.gguf_file import export_gguf

    check_choice(type_name, GGUF_TYPES, "--type")
    # A checkpoint that cannot be exported (ExportError) or is not installed: one line.
    done = export_gguf(checkpoint, output, type_name, modelfile=modelfile, threads=threads)
    typer.echo(f"{done.path}: {done.architecture}, {done.type}, {done.tensors} tensors, "
               f"{done.size_bytes / 1e6:.1f} MB (quantised by {done.quantized_by})")
    if done.modelfile is not None:
        typer.echo(f"{done.modelfile}: Ollama Modelfile (ollama create NAME -f {done.modelfile})")
    elif done.modelfile_note and modelfile:
        err_console.print(done.modelfile_note)
