"""The `convdistill` command: one typer app, one module per command group, each thin."""

from __future__ import annotations

import typer

from convdistill import __version__
from convdistill.cli import eval as eval_commands
from convdistill.cli import experiment, models, pairs, paths, recipes, teacher, train, trees
from convdistill.cli import export as export_commands
from convdistill.cli.common import FriendlyGroup
from convdistill.cli.demo import demo_command
from convdistill.cli.serve import serve_command

app = typer.Typer(
    name="convdistill",
    help="Distil multi-turn chat ability from conversation trees into small models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    cls=FriendlyGroup,  # expected errors as one line, bugs with their traceback, in every command
)
app.add_typer(paths.app, name="paths")
app.add_typer(pairs.app, name="pairs")
app.add_typer(trees.app, name="trees")
app.add_typer(models.app, name="models")
app.add_typer(train.app, name="train")
app.add_typer(recipes.app, name="recipes")
app.add_typer(eval_commands.app, name="eval")
app.add_typer(experiment.app, name="experiment")
app.add_typer(export_commands.app, name="export")
app.command("serve")(serve_command)
app.command("demo")(demo_command)  # the whole pipeline, end to end
teacher.register(app)  # extend, regenerate, rank


def _version(value: bool) -> None:
    if value:
        typer.echo(f"convdistill {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version."
    ),
) -> None:
    """Distil multi-turn chat ability from conversation trees into small models."""


def main() -> None:
    app()


if __name__ == "__main__":
    main()
