"""Files that ship with convdistill: the sample export, training recipes, eval suites and their
baselines, accelerate configs.

They live in top-level folders of the checkout (`conversation_trees/`, `trainers/`, `eval/`,
`configs/`), where they are edited and where `make demo` finds them. A wheel carries copies under
`convdistill/shipped/` (setup.py copies them in at build time), found here through
importlib.resources. One function answers "where is this file?" in both cases.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

# checkout folder -> the files of it that a wheel carries
SHIPPED: dict[str, tuple[str, ...]] = {
    "conversation_trees": ("*.jsonl", "*.jsonl.gz", "README.md"),
    "trainers": ("*.yaml",),
    "eval/suites": ("*.jsonl",),
    "eval/baselines": ("*.json",),
    "configs/accelerate": ("*.yaml",),
}
PACKAGED = "shipped"  # folder inside the installed package
CHECKOUT = Path(__file__).resolve().parents[2]  # src/convdistill/resources.py -> the checkout


def _packaged_root() -> Path | None:
    root = files("convdistill") / PACKAGED
    # an installed wheel is unpacked on disk, so its resources are real paths
    return Path(str(root)) if root.is_dir() else None


def shipped_file(relative: str | Path) -> Path:
    """The shipped file at `relative` (e.g. "trainers/llama-tiny-sft.yaml"): the wheel's copy
    when the package is installed from a wheel, the checkout's file otherwise.

    FileNotFoundError naming both places when neither has it."""
    relative = Path(relative)
    packaged = _packaged_root()
    if packaged is not None and (packaged / relative).exists():
        return packaged / relative
    if (CHECKOUT / relative).exists():
        return CHECKOUT / relative
    where = f"{packaged} or {CHECKOUT}" if packaged is not None else str(CHECKOUT)
    raise FileNotFoundError(f"{relative}: not shipped with this installation of convdistill (looked in {where})")


def shipped_files(folder: str) -> list[Path]:
    """Every shipped file of one folder of SHIPPED (e.g. "trainers"), sorted by name."""
    patterns = SHIPPED[folder]
    packaged = _packaged_root()
    root = packaged / folder if packaged is not None and (packaged / folder).is_dir() else CHECKOUT / folder
    found = {path for pattern in patterns for path in root.glob(pattern) if path.is_file()}
    return sorted(found, key=lambda path: path.name)
