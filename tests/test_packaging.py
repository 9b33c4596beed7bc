"""What a user gets from `pip install convdistill`: every module the package imports at run time
is a declared dependency (not one that happens to arrive through another package)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "convdistill"
# loaded only by pytest itself (the pytest11 entry point), which is then installed by definition
PYTEST_ONLY = {SOURCE / "eval" / "pytest_plugin.py"}


def imported_modules() -> dict[str, Path]:
    """Top-level modules imported anywhere in the package (eagerly or inside functions)."""
    found: dict[str, Path] = {}
    for path in sorted(SOURCE.rglob("*.py")):
        if path in PYTEST_ONLY:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.partition(".")[0], path)
    return found


def declared_distributions() -> set[str]:
    """[project] dependencies, and the optional extras a user installs for one feature (not `dev`):
    code importing those says what to install when they are missing (e.g. llama-cpp-python for
    `export gguf --type q4_k_m`)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [spec for name, specs in project.get("optional-dependencies", {}).items() if name != "dev"
              for spec in specs]
    return {_normalise(re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0]) for spec in [*project["dependencies"], *extras]}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_runtime_import_is_a_declared_dependency() -> None:
    providers = importlib.metadata.packages_distributions()
    declared = declared_distributions()
    missing = []
    for module, path in imported_modules().items():
        if module in sys.stdlib_module_names or module in ("convdistill", "__future__"):
            continue
        distributions = {_normalise(d) for d in providers.get(module, [])}
        assert distributions, f"{module} (imported in {path.relative_to(ROOT)}) is not installed"
        if not distributions & declared:
            missing.append(f"{module} ({', '.join(sorted(distributions))}), in {path.relative_to(ROOT)}")
    assert not missing, "imported but not declared in [project] dependencies or extras: " + "; ".join(missing)


def test_trl_and_transformers_have_upper_bounds() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for name in ("trl", "transformers"):
        (spec,) = [s for s in project["dependencies"] if _normalise(re.split(r"[<>=]", s)[0]) == name]
        assert "<" in spec, spec
