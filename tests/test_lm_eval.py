"""lm-evaluation-harness against `convdistill serve` and on saved students.

The real `lm_eval` command runs the two task files that ship in tests/fixtures/lm_eval/ (written
for these tests; local JSON data, no hub): a generation task through `local-chat-completions`,
and a multiple-choice task through `local-completions` (log-likelihoods from `/v1/completions`
with echo and logprobs, tokenised by the server's own `/tokenize`), whose numbers must equal
those of `--model hf` on the same checkpoint; and `--model hf` on a saved student of each
family."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT
from convdistill.models import init_student
from convdistill.serve import BackgroundServer, ChatModel, load_chat_model

TASKS = ROOT / "tests" / "fixtures" / "lm_eval"
LM_EVAL = [sys.executable, "-m", "lm_eval", "run", "--include_path", ".", "--log_samples"]


def lm_eval(tmp_path: Path, task: str, model: str, model_args: str, *extra: str) -> dict[str, Any]:
    """Run the harness from the task folder (its data_files are relative) and return
    {"results": the task's metrics, "samples": one record per document}."""
    out = tmp_path / f"{task}-{model}"
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(tmp_path / "datasets"), "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([*LM_EVAL, "--tasks", task, "--model", model, "--model_args", model_args,
                           "--output_path", str(out), *extra],
                          cwd=TASKS, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (results,) = out.rglob("results_*.json")
    (samples,) = out.rglob(f"samples_{task}_*.jsonl")
    return {"results": json.loads(results.read_text())["results"][task],
            "samples": [json.loads(line) for line in samples.read_text().splitlines()]}


def choice_log_likelihoods(run: dict[str, Any]) -> list[float]:
    return [float(resp[0][0]) for sample in run["samples"] for resp in sample["resps"]]


@pytest.fixture(scope="module")
def students(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("students")
    return {family: init_student(family, "tiny", root / family).path for family in ("llama", "t5")}


@pytest.mark.slow
def test_a_generation_task_through_chat_completions(tmp_path: Path):
    with BackgroundServer(load_chat_model("smollm2-135m-instruct")) as server:
        run = lm_eval(tmp_path, "convdistill_capitals", "local-chat-completions",
                      f"model=smollm2-135m-instruct,base_url={server.base_url}/chat/completions,"
                      "num_concurrent=6,max_retries=1", "--apply_chat_template")
    samples = run["samples"]
    assert len(samples) == 6 and all(s["resps"][0][0] for s in samples)  # every question answered
    score = run["results"]["exact_match,first_city"]
    assert score == pytest.approx(sum(s["exact_match"] for s in samples) / 6)
    assert score >= 0.5  # SmolLM2 knows most of these capitals (5 of 6 when this was written)


@pytest.mark.slow
def test_multiple_choice_through_completions_equals_the_harness_own_hf_model(tmp_path: Path,
                                                                          students: dict[str, Path]):
    folder = students["llama"]
    with BackgroundServer(ChatModel(folder, "tiny-llama")) as server:
        served = lm_eval(tmp_path, "convdistill_facts", "local-completions",
                         f"model=tiny-llama,base_url={server.base_url}/completions,tokenizer_backend=remote,"
                         "max_retries=1", "--batch_size", "8")
    local = lm_eval(tmp_path, "convdistill_facts", "hf", f"pretrained={folder},dtype=float32",
                    "--device", "cpu", "--batch_size", "8")
    assert len(served["samples"]) == len(local["samples"]) == 8
    ours, theirs = choice_log_likelihoods(served), choice_log_likelihoods(local)
    assert len(ours) == 26 and ours == pytest.approx(theirs, abs=1e-3)
    assert served["results"]["acc,none"] == local["results"]["acc,none"]


@pytest.mark.slow
def test_the_hf_model_scores_a_saved_encoder_decoder_student(tmp_path: Path, students: dict[str, Path]):
    run = lm_eval(tmp_path, "convdistill_facts", "hf", f"pretrained={students['t5']},backend=seq2seq,dtype=float32",
                  "--device", "cpu", "--batch_size", "8")
    values = choice_log_likelihoods(run)
    assert len(run["samples"]) == 8 and len(values) == 26
    assert all(v < 0 for v in values) and len(set(values)) > 20  # real, distinct scores per choice
    assert 0.0 <= run["results"]["acc,none"] <= 1.0
