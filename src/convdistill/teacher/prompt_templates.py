"""Prompt templates in files: the defaults ship with the package, a user's folder overrides them.

Files (any subset may be overridden with ``--prompts-dir DIR``):

    teacher_system.txt   system message of every teacher answer
    simulator.txt        the user simulator's instruction ($conversation, $persona, $style, $end_marker)
    rank.txt             the ranking instruction ($conversation, $candidates, $count)
    personas.txt         one simulated-user persona per line, drawn by seed
    styles.txt           one writing style per line, drawn by seed

Templates use ``$name`` placeholders (string.Template), so braces in a prompt need no escaping.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

from convdistill.errors import BadRecipe

FILES = ("teacher_system.txt", "simulator.txt", "rank.txt", "personas.txt", "styles.txt")


@dataclass(frozen=True)
class PromptSet:
    teacher_system: str
    simulator: Template
    rank: Template
    personas: tuple[str, ...]
    styles: tuple[str, ...]


def _read(name: str, override_dir: Path | None) -> str:
    if override_dir is not None and (override_dir / name).is_file():
        return (override_dir / name).read_text(encoding="utf-8")
    return resources.files("convdistill.teacher").joinpath("prompts", name).read_text(encoding="utf-8")


def _lines(text: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def load_prompts(override_dir: str | Path | None = None) -> PromptSet:
    folder = Path(override_dir) if override_dir is not None else None
    if folder is not None and not folder.is_dir():
        raise BadRecipe(f"--prompts-dir {folder}: not a folder")
    prompts = PromptSet(
        teacher_system=_read("teacher_system.txt", folder).strip(),
        simulator=Template(_read("simulator.txt", folder)),
        rank=Template(_read("rank.txt", folder)),
        personas=_lines(_read("personas.txt", folder)) or ("",),
        styles=_lines(_read("styles.txt", folder)) or ("",),
    )
    for name, template, keys in (
        ("simulator.txt", prompts.simulator, ("conversation", "end_marker")),
        ("rank.txt", prompts.rank, ("conversation", "candidates", "count")),
    ):
        missing = [k for k in keys if f"${k}" not in template.template and f"${{{k}}}" not in template.template]
        if missing:
            raise BadRecipe(f"prompt template {name} lacks placeholder(s): {', '.join('$' + k for k in missing)}")
    return prompts


def transcript(history: list[tuple[str, str]]) -> str:
    """A conversation as text, for prompts that show it to the teacher as a whole."""
    names = {"user": "User", "assistant": "Assistant", "system": "System"}
    return "\n\n".join(f"{names.get(role, role)}: {text}" for role, text in history)
