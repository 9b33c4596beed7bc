"""`convdistill recipes list | copy` and `convdistill eval suites` in the checkout (the wheel's
copies are checked by tests/test_wheel.py)."""

from __future__ import annotations

from pathlib import Path

from conftest import ROOT, run_cli


def test_recipes_list_names_every_shipped_recipe() -> None:
    done = run_cli("recipes", "list")
    assert done.returncode == 0, done.stderr
    names = {line.split()[0] for line in done.stdout.splitlines()}
    assert names == {p.stem for p in (ROOT / "trainers").glob("*.yaml")}


def test_recipes_copy_writes_once_and_refuses_unknown_names(tmp_path: Path) -> None:
    done = run_cli("recipes", "copy", "llama-tiny-sft.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "llama-tiny-sft.yaml").read_text() == (ROOT / "trainers" / "llama-tiny-sft.yaml").read_text()
    assert "--train_file" in done.stderr  # the recipe's relative train_file is not in this folder: says where
    again = run_cli("recipes", "copy", "llama-tiny-sft", cwd=tmp_path)
    assert again.returncode == 1 and "--force" in again.stderr and "Traceback" not in again.stderr
    wrong = run_cli("recipes", "copy", "lama-tiny-sft", cwd=tmp_path)
    assert wrong.returncode == 1 and "did you mean 'llama-tiny-sft'" in wrong.stderr


def test_eval_suites_lists_cases_and_turns() -> None:
    done = run_cli("eval", "suites")
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()}
    assert set(rows) == {p.stem for p in (ROOT / "eval" / "suites").glob("*.jsonl")}
    cases = sum(1 for line in (ROOT / "eval/suites/anaphora.jsonl").read_text().splitlines() if line.strip())
    assert f"{cases} cases" in rows["anaphora"]
