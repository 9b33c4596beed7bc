"""`convdistill recipes list | copy NAME [DEST]`: the training recipes that ship with convdistill."""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path
from typing import Annotated

import typer
import yaml

from convdistill.cli.common import err_console, fail
from convdistill.resources import shipped_file, shipped_files

app = typer.Typer(
    help="Training recipes shipped with convdistill (YAML for `convdistill train`): list them, or "
    "copy one into the current folder to edit.",
    no_args_is_help=True,
)


def summary(path: Path, width: int = 100) -> str:
    """The first sentence of a shipped file's leading comment block."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    text = " ".join(lines)
    first = text.split(". ", 1)[0].rstrip(".")
    return first if len(first) <= width else first[: width - 3] + "..."


def _recipes() -> dict[str, Path]:
    return {path.stem: path for path in shipped_files("trainers")}


@app.command("list")
def list_recipes() -> None:
    """Every shipped recipe: name and what it trains."""
    recipes = _recipes()
    width = max(map(len, recipes), default=0)
    for name, path in recipes.items():
        typer.echo(f"{name:<{width}}  {summary(path)}")


@app.command("copy")
def copy_recipe(
    name: Annotated[str, typer.Argument(help="A name from `convdistill recipes list` (.yaml optional).")],
    dest: Annotated[Path | None, typer.Argument(help="File or folder to write; default ./NAME.yaml.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Copy a shipped recipe to edit it, then: convdistill train METHOD --config NAME.yaml"""
    recipes = _recipes()
    name = name.removesuffix(".yaml")
    if name not in recipes:
        close = difflib.get_close_matches(name, recipes, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        fail(f"no shipped recipe {name!r}{hint}; `convdistill recipes list` shows them")
    target = dest if dest is not None else Path(f"{name}.yaml")
    if target.is_dir():
        target = target / f"{name}.yaml"
    if target.exists() and not force:
        fail(f"{target} exists; give --force to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(recipes[name], target)
    typer.echo(str(target))
    # The recipe names its data relative to a checkout; outside one, say where the shipped copy is.
    train_file = (yaml.safe_load(recipes[name].read_text()) or {}).get("train_file")
    if isinstance(train_file, str) and not Path(train_file).exists():
        try:
            shipped = shipped_file(train_file)
        except FileNotFoundError:
            return
        err_console.print(f"note: its train_file {train_file} is not here; the shipped copy is "
                          f"{shipped} (add --train_file {shipped}, or edit the recipe)", markup=False)
