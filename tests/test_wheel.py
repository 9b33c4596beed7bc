"""convdistill as a user installs it: the wheel built from this checkout, installed into a fresh
virtual environment, run from an empty folder, finds its sample export, recipes and suites
inside the package.

Nothing is downloaded: the wheel is built without build isolation (setuptools is in .venv), and
the fresh environment reuses the dependencies installed in .venv (torch among them) through a
path entry, the way --system-site-packages would reuse a system-wide torch. Only the path is
added, not .venv's .pth files, so the editable install of this checkout stays invisible there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import ROOT

# what a build reads: the package, its metadata, and the data folders setup.py copies in
BUILD_INPUTS = ["pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "src",
                "conversation_trees", "trainers", "eval", "configs"]


def run(*command: str | Path, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=timeout)
    assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ folder of a fresh venv with the wheel installed."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"  # a copy: the build leaves build/ and *.egg-info behind
    source.mkdir()
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(ROOT / name, source / name)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
        "-w", base / "dist", ".", cwd=source)
    (wheel,) = (base / "dist").glob("convdistill-*.whl")

    venv = base / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=base)
    python = venv / "bin" / "python"
    purelib = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=base).stdout.strip()
    (Path(purelib) / "reuse_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel,
        cwd=base)
    return venv / "bin"


@pytest.fixture
def empty(tmp_path: Path) -> Path:
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder


def test_the_package_comes_from_the_wheel_with_its_data(fresh: Path, empty: Path) -> None:
    code = ("import convdistill, pathlib; from convdistill.resources import shipped_file; "
            "print(pathlib.Path(convdistill.__file__).parent); print(shipped_file('trainers/llama-tiny-sft.yaml'))")
    package, recipe = run(fresh / "python", "-c", code, cwd=empty).stdout.split()
    assert Path(package).is_relative_to(fresh.parent), package  # not the checkout
    assert Path(recipe).is_relative_to(Path(package) / "shipped")


def test_recipes_and_suites_are_listed_and_copied_from_the_wheel(fresh: Path, empty: Path) -> None:
    listed = run(fresh / "convdistill", "recipes", "list", cwd=empty).stdout
    assert {line.split()[0] for line in listed.splitlines()} >= {"llama-tiny-sft", "t5-tiny-dpo", "t5-tiny-distill"}
    run(fresh / "convdistill", "recipes", "copy", "t5-tiny-sft", cwd=empty)
    assert (empty / "t5-tiny-sft.yaml").read_text() == (ROOT / "trainers" / "t5-tiny-sft.yaml").read_text()
    suites = run(fresh / "convdistill", "eval", "suites", cwd=empty).stdout
    names = {line.split()[0] for line in suites.splitlines()}
    assert names == {p.stem for p in (ROOT / "eval" / "suites").glob("*.jsonl")}
    assert str(fresh.parent) in suites  # the files are the wheel's


@pytest.mark.slow
def test_quick_demo_runs_from_an_empty_folder(fresh: Path, empty: Path) -> None:
    # Distillation only: it reads every kind of data file the wheel carries (sample, recipes, the
    # correction recipe, suites); tests/test_demo.py runs the other trainers from the source tree.
    done = run(fresh / "convdistill", "demo", "--quick", "--methods", "distill", "--threads", "1",
               "--out", "runs/demo", cwd=empty, timeout=1200)
    assert (empty / "runs" / "demo" / "report.md").is_file()
    assert done.stdout.strip().splitlines()[-1].endswith("report.md")
    assert "Traceback" not in done.stderr
