"""The house's static checks, part of the test suite so that a change cannot land without them:
ruff (the rule families in pyproject.toml) over src, tests and benchmarks, and mypy over src
at the level [tool.mypy] states."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_is_clean() -> None:
    done = run_tool("ruff", "check", "src", "tests", "benchmarks")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_mypy_is_clean_on_src() -> None:
    done = run_tool("mypy")  # files and level from [tool.mypy]
    assert done.returncode == 0, done.stdout + done.stderr
