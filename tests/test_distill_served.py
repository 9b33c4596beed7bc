"""Distillation from a served teacher: the embedded SmolLM2 behind `convdistill serve` builds the
same top-k logit cache over HTTP (`/v1/completions`, echo + logprobs by token id) as the local
teacher does, and a student trains from it; a teacher that tokenises differently is refused
over the endpoint before anything is scored."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import SAMPLE, run_cli, write_jsonl
from convdistill.trainers import train
from convdistill.trainers.logit_cache import LogitCache

TEACHER = "smollm2-135m-instruct"
COMMON = {
    "bf16": False, "gradient_checkpointing": False, "report_to": "none", "logging_steps": 1,
    "save_strategy": "no", "dataloader_pin_memory": False, "disable_tqdm": True,
    "max_length": 128, "max_target_length": 64, "per_device_train_batch_size": 4, "learning_rate": 1e-3,
    "max_steps": 2, "max_train_examples": 8, "kd_top_k": 20, "seed": 3,
}


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from convdistill.conversation_trees import export_paths

    root = tmp_path_factory.mktemp("served-data")
    export_paths(SAMPLE, root / "all.jsonl", strategy="best")
    records = [json.loads(line) for line in (root / "all.jsonl").read_text().splitlines()]
    return write_jsonl(root / "train.jsonl", records[:10])


@pytest.fixture(scope="module")
def served() -> Iterator[str]:
    from convdistill.serve import BackgroundServer, load_chat_model

    with BackgroundServer(load_chat_model(TEACHER)) as server:
        yield server.base_url


def distill(paths: Path, out: Path, family: str, **teacher: Any) -> Any:
    return train("distill", {**COMMON, "model_name_or_path": f"student:{family}-tiny", "train_file": str(paths),
                             "output_dir": str(out), **teacher})


def only_cache(out: Path) -> LogitCache:
    (folder,) = [f for f in (out / "teacher-logits").iterdir() if (f / "meta.json").is_file()]
    return LogitCache.open(folder)


def assert_same_top_k(local: LogitCache, remote: LogitCache) -> None:
    """Same ids rank by rank and log-probabilities within 1e-4. The one allowed difference: two
    candidates tied to float rounding (within 1e-5) may come in the other order, since the
    server pads its batches differently (none did when this test was written)."""
    ids, served_ids = np.asarray(local.token_ids), np.asarray(remote.token_ids)
    values = np.asarray(local.log_probs)
    assert np.abs(values - np.asarray(remote.log_probs)).max() <= 1e-4
    step = np.abs(np.diff(values, axis=1))
    tied = np.zeros_like(values, dtype=bool)
    tied[:, 1:] |= step <= 1e-5
    tied[:, :-1] |= step <= 1e-5
    # at rank k the tie may be with the k+1-th, which neither cache keeps: equal values tell
    tied[:, -1] |= np.abs(values[:, -1] - np.asarray(remote.log_probs)[:, -1]) <= 1e-5
    differs = ids != served_ids
    assert not (differs & ~tied).any(), np.argwhere(differs & ~tied)[:5]
    assert differs.any(axis=1).mean() < 0.01


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llama", "t5"])
def test_the_served_teacher_builds_the_local_cache_and_the_student_trains(paths: Path, served: str,
                                                                         tmp_path: Path, family: str):
    distill(paths, tmp_path / "local", family, teacher=TEACHER)
    result = distill(paths, tmp_path / "served", family, teacher_base_url=served, teacher_model=TEACHER)
    local, remote = only_cache(tmp_path / "local"), only_cache(tmp_path / "served")
    assert local.meta["fingerprint"] != remote.meta["fingerprint"]  # two teachers, two caches
    assert remote.meta["teacher"] == f"{TEACHER} at {served}" and remote.meta["k"] == 20
    assert local.meta["rows"] == remote.meta["rows"] > 300
    np.testing.assert_array_equal(local.offsets, remote.offsets)
    assert_same_top_k(local, remote)
    steps = [e for e in result.log_history if "kd_loss" in e]
    assert len(steps) == 2 and all(np.isfinite(e["loss"]) and e["kd_loss"] > 0 for e in steps)
    assert result.checkpoint.is_dir()
    assert json.loads((tmp_path / "served" / "run_log.json").read_text())["teacher"] == f"{TEACHER} at {served}"


@pytest.mark.slow
def test_a_teacher_with_another_tokenizer_is_refused_over_the_endpoint(paths: Path, served: str,
                                                                      tmp_path: Path):
    from convdistill.models import init_student

    student = init_student("llama", "tiny", tmp_path / "own-bpe", tokenizer=paths, vocab_size=400).path
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model_name_or_path: {student}\nteacher_base_url: {served}\nteacher_model: {TEACHER}\n"
                      f"kd_top_k: 20\ntrain_file: {paths}\noutput_dir: {tmp_path / 'out'}\nmax_steps: 1\n"
                      "report_to: none\n")
    done = run_cli("train", "distill", "--config", recipe)
    assert done.returncode == 1, done.stderr
    assert "tokenises differently from the student" in done.stderr and "GOLD" in done.stderr
    assert "Traceback" not in done.stderr
    assert not any((tmp_path / "out" / "teacher-logits").glob("*/meta.json"))


@pytest.mark.parametrize(("fields", "named"), [
    ({"kd_top_k": 32}, "kd_top_k"),
    ({"kd_top_k": 20, "kd_temperature": 2.0}, "kd_temperature"),
    ({"kd_top_k": 20, "teacher_model": None}, "teacher_model"),
    ({"kd_top_k": 20, "kd_cache": False}, "kd_cache"),
    ({"kd_top_k": 20, "distill_mode": "on_policy"}, "distill_mode"),
])
def test_recipe_fields_a_served_teacher_cannot_honour_are_refused_naming_the_field(tmp_path: Path, fields: dict,
                                                                                   named: str):
    from convdistill.trainers import RecipeError, load_recipe

    values = {"model_name_or_path": "student:llama-tiny", "train_file": str(SAMPLE), "output_dir": str(tmp_path),
              "teacher_base_url": "http://127.0.0.1:9/v1", "teacher_model": "m", **fields}
    with pytest.raises(RecipeError, match=named):
        load_recipe("distill", values)


def test_an_unreachable_teacher_endpoint_stops_the_run_in_one_line(paths: Path, tmp_path: Path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model_name_or_path: student:llama-tiny\nteacher_base_url: http://127.0.0.1:9/v1\n"
                      f"teacher_model: m\nkd_top_k: 20\ntrain_file: {paths}\noutput_dir: {tmp_path / 'out'}\n"
                      "max_steps: 1\nmax_train_examples: 2\nreport_to: none\n")
    done = run_cli("train", "distill", "--config", recipe)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "teacher m at http://127.0.0.1:9/v1" in done.stderr and "failed 4 times" in done.stderr
    assert not any((tmp_path / "out" / "teacher-logits").glob("*/meta.json"))
